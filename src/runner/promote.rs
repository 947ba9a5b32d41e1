//! Promotion: staging and production deploy the slug another environment runs, never a build
//! of their own (Magento Cloud's pipeline: integration, then staging, then production, all from
//! one build). Here the request is judged and queued; the runner deploys it as any release,
//! with the target's own variables, services and routes (`JobKind::Promote`).

use crate::core::EnvName;
use crate::queue::{JobKind, JobStore, Request};
use crate::store::environments::{EnvType, Environments};

use crate::store::deployed;

/// What is asked: `promote PROJECT FROM TO`.
pub struct Promotion<'a> {
    pub project: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// The commit the promoter expects FROM to run (a prefix of its id).
    pub commit: Option<&'a str>,
    /// The admin's override of the pipeline's order.
    pub force: bool,
    pub by: Option<String>,
}

/// The job a promotion is, or why it is refused.
pub fn request(data: &std::path::Path, store: &dyn JobStore, p: &Promotion<'_>) -> Result<Request, String> {
    let repo = crate::activity::project_named(store, p.project)?;
    let types = Environments::load(repo.path())?;
    let (from_type, to_type) = (types.of(p.from), types.of(p.to));
    let to = EnvName::parse(p.to).map_err(|e| e.to_string())?;
    if to_type.pushed() {
        return Err(format!(
            "environment `{}` is an integration environment, deployed by pushing its branch: only staging and \
             production are promoted to (declare one with: pushgate-runner env create {} {} --type staging)",
            p.to, p.project, p.to
        ));
    }
    if p.from == p.to {
        return Err(format!("`{}` cannot be promoted to itself (a redeploy: pushgate-runner env redeploy)", p.to));
    }
    let source = deployed::EnvDir::new(data, &repo, &EnvName::parse(p.from).map_err(|e| e.to_string())?);
    let info = source
        .current_release()
        .and_then(|r| source.info(&r))
        .ok_or_else(|| format!("environment `{}` of {} runs nothing to promote", p.from, p.project))?;
    if to_type == EnvType::Production && from_type != EnvType::Staging && !p.force {
        let staging = types_named(&types, EnvType::Staging);
        return Err(format!(
            "production is reached from staging only, and `{}` is a {} environment: promote it to staging first \
             (pushgate-runner promote {} {} {staging}), or pass --force to skip staging",
            p.from,
            from_type.as_str(),
            p.project,
            p.from
        ));
    }
    if let Some(expected) = p.commit {
        if !info.commit.as_str().starts_with(expected) && !p.force {
            return Err(format!(
                "`{}` runs commit {}, not {expected}: promote what was tested (or pass --force)",
                p.from, info.commit
            ));
        }
    }
    Ok(Request {
        kind: JobKind::Promote,
        repo,
        ref_name: format!("refs/heads/{}", info.branch.clone().unwrap_or_else(|| p.from.to_owned())),
        environment: to,
        commit: info.commit,
        options: serde_json::json!({ "from": p.from, "release": info.release, "forced": p.force }).to_string(),
        pusher: p.by.clone(),
    })
}

/// The name of the project's first environment of type `kind` (for hints).
fn types_named(types: &Environments, kind: EnvType) -> String {
    types.named(kind).unwrap_or_else(|| kind.as_str().to_owned())
}
