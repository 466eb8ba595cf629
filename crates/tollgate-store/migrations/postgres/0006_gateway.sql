-- The gateway reserves a request's input plus its output limit; when a
-- request names no limit, the plan's default output reservation stands in.
ALTER TABLE plans ADD COLUMN default_output_reservation BIGINT NOT NULL DEFAULT 4096;
