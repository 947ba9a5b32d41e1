//! Promotion: the slug an environment runs deployed to the next one of the pipeline (staging,
//! production), never built again.

use super::{Actor, Error};
use crate::queue::{Job, JobStore};
pub use crate::runner::promote::Promotion;
use crate::store::DataDir;

/// Queues the promotion as a job by `actor`, or says why the pipeline refuses it.
pub fn promote(
    data: &DataDir,
    store: &mut dyn JobStore,
    promotion: Promotion<'_>,
    actor: &Actor,
) -> Result<Job, Error> {
    let promotion = Promotion { by: actor.name.clone(), ..promotion };
    let request = crate::runner::promote::request(data.root(), &*store, &promotion).map_err(Error::Conflict)?;
    super::jobs::enqueue(data, store, &request)
}
