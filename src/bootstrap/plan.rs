//! The plan step, once per catalog plan. A plan is versioned: the
//! published (`active` or `scheduled`) version is what customers subscribe
//! to, so it is compared, never edited. A matching draft left by an
//! interrupted run is published; a drifted plan is replaced only under
//! `--publish-new-version`. When OpenMeter refuses to publish, the plan's
//! line says why and that the draft exists unpublished, so nobody can
//! subscribe to it yet.

use reqwest::Method;

use super::catalog::PlanSpec;
use super::diff;
use super::report::{Kind, Line, Outcome};
use super::step::{compared, fatal, Ctx, Ids, Resolved};
use super::wire::CreatePlanRequest;
use crate::openmeter::model::{Plan, PlanStatus};
use crate::openmeter::{ApiError, OpenMeterClient};

/// Looks a catalog feature key up among the resolved features.
struct Features<'a>(&'a Ids);

impl Features<'_> {
    fn id(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(Resolved::id).map(str::to_owned)
    }

    /// The first rate-card feature whose step failed, if any.
    fn unavailable<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Option<&'k str> {
        keys.into_iter()
            .find(|k| matches!(self.0.get(*k), None | Some(Resolved::Unavailable)))
    }
}

/// Ensures the catalog plan `spec` exists, matches and is published.
pub(super) async fn ensure(
    ctx: &Ctx<'_>,
    spec: &PlanSpec,
    features: &Ids,
) -> Result<Line, ApiError> {
    let features = Features(features);
    let versions: Vec<Plan> = ctx
        .client
        .plan_versions(&spec.key)
        .await?
        .into_iter()
        .filter(|p| p.deleted_at.is_none())
        .collect();
    let published = versions
        .iter()
        .filter(|p| p.is_subscribable())
        .max_by_key(|p| p.version);
    let draft = Plan::newest_draft(&versions);
    let differences = |p: &Plan| diff::plan(spec, p, &|k| features.id(k));
    match (published, draft) {
        (Some(current), draft) => {
            on_published(ctx, spec, &features, current, differences(current), draft).await
        }
        (None, Some(draft)) => on_draft(ctx, spec, draft, differences(draft)).await,
        (None, None) => create(ctx, spec, &features, Outcome::Created, None).await,
    }
}

/// The published version: exists, drift, or (under
/// `--publish-new-version`) replaced by a new published version.
async fn on_published(
    ctx: &Ctx<'_>,
    spec: &PlanSpec,
    features: &Features<'_>,
    current: &Plan,
    differences: Vec<String>,
    draft: Option<&Plan>,
) -> Result<Line, ApiError> {
    let key = spec.key.as_str();
    let version = format!("version {}", current.version);
    if differences.is_empty() {
        return Ok(compared(Kind::Plan, key, differences).with_detail(version));
    }
    let was = format!(
        "replaces {version}, which differed: {}",
        differences.join("; ")
    );
    if !ctx.opts.publish_new_version {
        return Ok(compared(Kind::Plan, key, differences)
            .with_detail(format!("{version}; --publish-new-version replaces it")));
    }
    // A newer draft (from an interrupted run) is published as is when it
    // matches; one that differs stands in the way of a new version.
    if let Some(draft) = draft {
        let draft_differences = diff::plan(spec, draft, &|k| features.id(k));
        if !draft_differences.is_empty() {
            return Ok(
                compared(Kind::Plan, key, draft_differences).with_detail(blocking_draft(draft))
            );
        }
        return publish_draft(ctx, key, draft, Some(was)).await;
    }
    create(ctx, spec, features, Outcome::Published, Some(was)).await
}

/// No published version, only a draft: publish it if it matches.
async fn on_draft(
    ctx: &Ctx<'_>,
    spec: &PlanSpec,
    draft: &Plan,
    differences: Vec<String>,
) -> Result<Line, ApiError> {
    let key = spec.key.as_str();
    if differences.is_empty() {
        return publish_draft(ctx, key, draft, None).await;
    }
    Ok(compared(Kind::Plan, key, differences).with_detail(blocking_draft(draft)))
}

/// What to do about a draft that differs from the catalog. OpenMeter keeps
/// one draft per plan and refuses to create another version while it exists
/// (openmeterio/openmeter `productcatalog/plan/service/plan.go`), and its
/// update cannot change the currency or cadence, so the draft must go.
fn blocking_draft(draft: &Plan) -> String {
    format!(
        "unpublished draft version {} differs from the catalog, and OpenMeter allows one draft \
         per plan: delete that draft in OpenMeter, then run `ticketmeter bootstrap` again",
        draft.version
    )
}

async fn publish_draft(
    ctx: &Ctx<'_>,
    key: &str,
    draft: &Plan,
    note: Option<String>,
) -> Result<Line, ApiError> {
    let mut detail = format!("draft version {}", draft.version);
    if let Some(note) = note {
        detail = format!("{detail}; {note}");
    }
    if ctx.opts.dry_run {
        return Ok(Line::new(Kind::Plan, key, Outcome::WouldCreate)
            .with_detail(format!("would publish {detail}")));
    }
    publish(ctx, key, draft, Outcome::Published, &detail).await
}

/// Creates a new version from the catalog and publishes it; `outcome` is
/// what the line says on success (`Created` for the first version).
async fn create(
    ctx: &Ctx<'_>,
    spec: &PlanSpec,
    features: &Features<'_>,
    outcome: Outcome,
    note: Option<String>,
) -> Result<Line, ApiError> {
    let key = spec.key.as_str();
    let card_features = spec
        .phases
        .iter()
        .flat_map(|p| &p.rate_cards)
        .filter_map(|c| c.feature.as_ref().map(|f| f.as_str()));
    if let Some(missing) = features.unavailable(card_features) {
        let why = format!("its feature {missing} is not available");
        return Ok(Line::new(Kind::Plan, key, Outcome::Failed(why)));
    }
    let note = note.unwrap_or_default();
    if ctx.opts.dry_run {
        let line = Line::new(Kind::Plan, key, Outcome::WouldCreate);
        return Ok(if note.is_empty() {
            line
        } else {
            line.with_detail(note)
        });
    }
    let body = CreatePlanRequest::new(spec, &|k| features.id(k));
    let draft: Plan = ctx
        .client
        .send_json(
            "create plan",
            Method::POST,
            "/openmeter/plans",
            &[],
            Some(&body),
        )
        .await?;
    let detail = if note.is_empty() {
        format!("version {}", draft.version)
    } else {
        format!("version {}; {note}", draft.version)
    };
    publish(ctx, key, &draft, outcome, &detail).await
}

/// Appends the status when publishing did not make the version `active`
/// right away (e.g. `scheduled`), so the operator is not misled.
fn status_detail(plan: &Plan, detail: &str) -> String {
    if plan.status == PlanStatus::Active {
        format!("{detail}, active")
    } else {
        format!("{detail}, status {}", plan.status)
    }
}

/// Publishes `draft`; on success the line is `outcome` with `detail`. A
/// refusal is the plan's line too (see [`unpublished`]); only a refused
/// token stops the run.
async fn publish(
    ctx: &Ctx<'_>,
    key: &str,
    draft: &Plan,
    outcome: Outcome,
    detail: &str,
) -> Result<Line, ApiError> {
    match publish_call(ctx.client, &draft.id).await {
        Ok(published) => {
            Ok(Line::new(Kind::Plan, key, outcome).with_detail(status_detail(&published, detail)))
        }
        Err(e) if fatal(&e) => Err(e),
        Err(e) => Ok(unpublished(key, draft.version, &e)),
    }
}

/// A failed publish: OpenMeter's reason, and the draft it leaves behind,
/// which no customer can subscribe to until a later run publishes it.
fn unpublished(key: &str, version: u32, e: &ApiError) -> Line {
    let status = e
        .status()
        .map(|s| format!(" (HTTP {s})"))
        .unwrap_or_default();
    let why = format!("publishing failed{status}: {}", e.detail());
    Line::new(Kind::Plan, key, Outcome::Failed(why)).with_detail(format!(
        "draft version {version} exists unpublished: no customer can subscribe until \
         `ticketmeter bootstrap` publishes it"
    ))
}

async fn publish_call(client: &OpenMeterClient, id: &str) -> Result<Plan, ApiError> {
    let path = format!("/openmeter/plans/{id}/publish");
    client
        .send_json::<Plan, ()>("publish plan", Method::POST, &path, &[], None)
        .await
}
