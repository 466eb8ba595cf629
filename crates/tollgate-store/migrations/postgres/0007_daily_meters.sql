-- Daily rollups of the meters an event names itself (`meters`, and what a
-- settled reservation records), beside the built-in columns of
-- usage_daily, so that history and breakdowns show what the live counters
-- counted. Same key as usage_daily, plus the meter.
CREATE TABLE usage_daily_meters (
    user_id     TEXT NOT NULL,
    day         BIGINT NOT NULL,
    model       TEXT NOT NULL,
    feature     TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    provider    TEXT NOT NULL,
    key_source  TEXT NOT NULL,
    meter       TEXT NOT NULL,
    used        BIGINT NOT NULL,
    PRIMARY KEY (user_id, day, model, feature, key_id, provider, key_source, meter)
);

-- The events already in the ledger (summed as numeric, capped at the
-- largest bigint).
INSERT INTO usage_daily_meters (user_id, day, model, feature, key_id, provider, key_source, meter, used)
SELECT e.user_id, (e.ts / 86400000) * 86400000, COALESCE(e.model, ''), COALESCE(e.feature, ''),
       COALESCE(e.key_id, ''), COALESCE(e.provider, ''), e.key_source, j.key,
       LEAST(SUM(j.value::numeric), 9223372036854775807)::bigint
FROM usage_events e, jsonb_each_text(e.extra::jsonb) j
WHERE e.extra IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;
