//! The resync verdicts kept across restarts, on both databases.

mod common;

use common::{store_for, Db};

#[tokio::test]
async fn verdicts_are_kept_replaced_and_dropped_per_instance_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let (store, pg) = store_for(db, dir.path()).await;
        let many: Vec<(String, u64)> = (0..2_500u64)
            .map(|i| {
                (
                    format!("ConfigMap/ns/cm-{i}"),
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )
            })
            .collect();
        store.save_verdicts("a", &many, &[]).await.unwrap();
        store
            .save_verdicts("b", &[("ConfigMap/ns/cm-0".into(), 7)], &[])
            .await
            .unwrap();
        let kept = store.verdicts("a").await.unwrap();
        assert_eq!(kept.len(), 2_500, "{db:?}");
        // Fingerprints use all 64 bits (stored as signed, read back as they were).
        assert_eq!(
            kept["ConfigMap/ns/cm-2499"],
            2_499u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        store
            .save_verdicts(
                "a",
                &[("ConfigMap/ns/cm-1".into(), u64::MAX)],
                &["ConfigMap/ns/cm-2".into(), "ConfigMap/ns/never".into()],
            )
            .await
            .unwrap();
        let kept = store.verdicts("a").await.unwrap();
        assert_eq!(kept.len(), 2_499, "{db:?}");
        // A prune drops thousands at once.
        let pruned: Vec<String> = (100..2_500)
            .map(|i| format!("ConfigMap/ns/cm-{i}"))
            .collect();
        store.save_verdicts("a", &[], &pruned).await.unwrap();
        assert_eq!(store.verdicts("a").await.unwrap().len(), 99, "{db:?}");
        assert_eq!(kept["ConfigMap/ns/cm-1"], u64::MAX);
        assert!(!kept.contains_key("ConfigMap/ns/cm-2"));
        assert_eq!(store.verdicts("b").await.unwrap()["ConfigMap/ns/cm-0"], 7);
        store.pool().close().await;
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
    }
}
