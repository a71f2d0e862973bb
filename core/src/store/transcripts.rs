//! The agent transcripts kept with runs (`run_transcripts`): written once when
//! a run's Job ends, read by the run page and the API, dropped after
//! `lifecycle.transcript_retention_days`.

use super::{sql, Store, StoreError};
use crate::transcript::{self, Packed};
use serde::Serialize;

/// A kept transcript, as people read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Transcript {
    /// When it was kept, milliseconds since the epoch.
    pub recorded_at: i64,
    /// Bytes of text kept.
    pub size: i64,
    /// Whether older output was cut (only the end is kept).
    pub truncated: bool,
    /// The text, secrets redacted.
    pub text: String,
}

impl Store {
    /// Keeps `packed` as run `run_id`'s transcript, unless one is kept
    /// already (a replayed observation keeps the first). Returns whether it
    /// was new.
    pub async fn save_transcript(
        &self,
        run_id: &str,
        packed: &Packed,
        recorded_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO run_transcripts (run_id, recorded_at, size, truncated, body)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(run_id)
        .bind(recorded_at)
        .bind(packed.size)
        .bind(i64::from(packed.truncated))
        .bind(packed.body.clone())
        .execute(self.pool())
        .await
        .map_err(sql("keeping a transcript"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Run `run_id`'s kept transcript.
    pub async fn transcript(&self, run_id: &str) -> Result<Option<Transcript>, StoreError> {
        let row: Option<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT recorded_at, size, truncated, body FROM run_transcripts WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_optional(self.pool())
        .await
        .map_err(sql("reading a transcript"))?;
        Ok(row.map(|(recorded_at, size, truncated, body)| Transcript {
            recorded_at,
            size,
            truncated: truncated != 0,
            text: transcript::unpack(&body),
        }))
    }

    /// Drops the transcripts kept before `before` (ms); returns how many.
    pub async fn drop_transcripts_before(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM run_transcripts WHERE recorded_at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .map_err(sql("dropping old transcripts"))?;
        Ok(done.rows_affected())
    }
}
