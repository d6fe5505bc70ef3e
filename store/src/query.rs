//! Reading jobs: one by id, or a filtered page (keyset on the time-ordered id).

use jobs::{JobId, JobRecord, JobState};
use sqlx::AssertSqlSafe;

use crate::Store;
use crate::error::Error;
use crate::sql::{JOB_COLUMNS, JobRow};

/// Which jobs to list: filters and a keyset cursor (ids sort by creation time).
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs older than this one (the previous page's last id).
    pub before: Option<JobId>,
    /// Page size.
    pub limit: u32,
    /// Only kinds matching one of these SQL `LIKE` patterns (a key's kind globs);
    /// empty: every kind.
    pub kind_patterns: Vec<String>,
    /// Only queues matching one of these SQL `LIKE` patterns; empty: every queue.
    pub queue_patterns: Vec<String>,
}

impl Store {
    /// Jobs matching `query`, newest first, after its cursor.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobRecord>, Error> {
        let rows: Vec<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) \
               AND ($3::text IS NULL OR queue = $3) AND ($4::uuid IS NULL OR id < $4) \
               AND (cardinality($6::text[]) = 0 OR kind LIKE ANY($6)) \
               AND (cardinality($7::text[]) = 0 OR queue LIKE ANY($7)) \
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(query.state.map(|s| s.as_str()))
        .bind(&query.kind)
        .bind(&query.queue)
        .bind(query.before.map(|id| id.as_uuid()))
        .bind(i64::from(query.limit))
        .bind(&query.kind_patterns)
        .bind(&query.queue_patterns)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(JobRecord::from).collect())
    }

    /// One job by id.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, Error> {
        let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(JobRecord::from))
    }

    /// The jobs with these ids (any order; a missing id has no row): one statement,
    /// for the events of a bulk operator action.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get_jobs(&self, ids: &[JobId]) -> Result<Vec<JobRecord>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<uuid::Uuid> = ids.iter().map(JobId::as_uuid).collect();
        let rows: Vec<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(JobRecord::from).collect())
    }
}
