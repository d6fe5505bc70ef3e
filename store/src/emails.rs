//! Sent emails: [`Store`] implements `email.send`'s [`SentLog`] on the `emails` table,
//! one row per job whose message the SMTP server accepted.

use jobs::kinds::email::{OutgoingEmail, SentLog};
use jobs::{JobId, LedgerError};
use sqlx::Row;

use crate::Store;
use crate::error::Error;

impl SentLog for Store {
    async fn was_sent(&self, job: JobId) -> Result<bool, LedgerError> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM emails WHERE job_id = $1) AS sent")
            .bind(job.as_uuid())
            .fetch_one(self.pool())
            .await
            .map_err(Error::from)?;
        Ok(row.try_get("sent").map_err(Error::from)?)
    }

    async fn record_sent(&self, job: JobId, email: &OutgoingEmail) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO emails (job_id, recipient, message_id, subject) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job.as_uuid())
        .bind(email.to.as_str())
        .bind(&email.message_id)
        .bind(&email.subject)
        .execute(self.pool())
        .await
        .map_err(Error::from)?;
        Ok(())
    }
}
