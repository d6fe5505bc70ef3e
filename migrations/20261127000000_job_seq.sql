-- A job's transition counter: every statement that moves a job to another state adds
-- one in the same row write (no extra write, no trigger). It orders a job's live events
-- (`seq` is the event id of `GET /v1/jobs/{id}/events`), so a client reconnecting with
-- `Last-Event-ID` and an event arriving late from another process are told apart from
-- what the ledger says now.
ALTER TABLE jobs ADD COLUMN seq bigint NOT NULL DEFAULT 0;
