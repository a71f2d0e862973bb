-- PostgreSQL's 0010 chooses lz4 for inbox payloads; SQLite does not compress
-- them. Kept so both databases share one migration history.
SELECT 1;
