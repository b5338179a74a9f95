-- anomalies.detected_at: the wall-clock time the sidecar first opened the region (kept on every version of the row), for onset -> annotation timing.
ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS detected_at DateTime64(3, 'UTC') DEFAULT updated_at;
