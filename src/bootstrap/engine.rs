//! The run: meters, then features (which need meter ids), then the plans,
//! in the order written (they need feature ids). A failed object becomes a
//! `Failed` line and its dependants fail with it; the rest still run.

use reqwest::Method;

use super::catalog::{FeatureSpec, MeterSpec};
use super::report::{Kind, Line, Outcome, Report};
use super::step::{compared, fatal, Ctx, Ids, Resolved};
use super::wire::{CreateFeatureRequest, CreateMeterRequest, Feature, Meter};
use super::{diff, plan};
use crate::openmeter::{classify, ApiError, Call, ErrorClass, OpenMeterClient};

/// Runs every step. Only a fatal error (see [`fatal`]) stops the run.
pub(super) async fn run(ctx: &Ctx<'_>, report: &mut Report) -> Result<(), ApiError> {
    let meters = ensure_meters(ctx, report).await?;
    let features = ensure_features(ctx, &meters, report).await?;
    for spec in ctx.catalog.plans() {
        match plan::ensure(ctx, spec, &features).await {
            Ok(line) => report.push(line),
            Err(e) => failed(report, Kind::Plan, spec.key.as_str(), e)?,
        }
    }
    Ok(())
}

/// Adds a step's line to the report and returns where its object stands;
/// a non-fatal error becomes a `Failed` line and the object `Unavailable`.
fn record(
    report: &mut Report,
    kind: Kind,
    key: &str,
    step: Result<(Line, Resolved), ApiError>,
) -> Result<Resolved, ApiError> {
    match step {
        Ok((line, resolved)) => {
            report.push(line);
            Ok(resolved)
        }
        Err(e) => failed(report, kind, key, e).map(|()| Resolved::Unavailable),
    }
}

/// A step's error: a fatal one stops the run, any other is the object's
/// `Failed` line.
fn failed(report: &mut Report, kind: Kind, key: &str, e: ApiError) -> Result<(), ApiError> {
    if fatal(&e) {
        return Err(e);
    }
    report.push(Line::new(kind, key, Outcome::Failed(e.to_string())));
    Ok(())
}

async fn ensure_meters(ctx: &Ctx<'_>, report: &mut Report) -> Result<Ids, ApiError> {
    let mut ids = Ids::new();
    for spec in &ctx.catalog.meters {
        let key = spec.key.as_str();
        let step = ensure_meter(ctx, spec).await;
        let resolved = record(report, Kind::Meter, key, step)?;
        ids.insert(key.to_owned(), resolved);
    }
    Ok(ids)
}

async fn ensure_meter(ctx: &Ctx<'_>, spec: &MeterSpec) -> Result<(Line, Resolved), ApiError> {
    let key = spec.key.as_str();
    if let Some(existing) = find_meter(ctx.client, key).await? {
        return Ok(compare_meter(spec, existing));
    }
    if ctx.opts.dry_run {
        return Ok((
            Line::new(Kind::Meter, key, Outcome::WouldCreate),
            Resolved::Pending,
        ));
    }
    let body = CreateMeterRequest::from(spec);
    let created: Result<Meter, ApiError> = ctx
        .client
        .send_json(
            "create meter",
            Method::POST,
            "/openmeter/meters",
            &[],
            Some(&body),
        )
        .await;
    match created {
        Ok(meter) => Ok((
            Line::new(Kind::Meter, key, Outcome::Created),
            Resolved::Id(meter.id),
        )),
        // Someone created it since we looked (or a retried create landed
        // twice): compare with theirs.
        Err(e) if classify(Call::Catalog, &e) == ErrorClass::Conflict => {
            match find_meter(ctx.client, key).await? {
                Some(existing) => Ok(compare_meter(spec, existing)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn compare_meter(spec: &MeterSpec, existing: Meter) -> (Line, Resolved) {
    let line = compared(Kind::Meter, spec.key.as_str(), diff::meter(spec, &existing));
    (line, Resolved::Id(existing.id))
}

/// The live (not deleted) meter whose key is `key`.
async fn find_meter(client: &OpenMeterClient, key: &str) -> Result<Option<Meter>, ApiError> {
    let filter = [("filter[key][eq]", key)];
    let all: Vec<Meter> = client
        .list_all("list meters", "/openmeter/meters", &filter)
        .await?;
    Ok(all
        .into_iter()
        .find(|m| m.key == key && m.deleted_at.is_none()))
}

async fn ensure_features(
    ctx: &Ctx<'_>,
    meters: &Ids,
    report: &mut Report,
) -> Result<Ids, ApiError> {
    let mut ids = Ids::new();
    for spec in &ctx.catalog.features {
        let key = spec.key.as_str();
        let meter = meters
            .get(spec.meter.as_str())
            .unwrap_or(&Resolved::Unavailable);
        let step = ensure_feature(ctx, spec, meter).await;
        let resolved = record(report, Kind::Feature, key, step)?;
        ids.insert(key.to_owned(), resolved);
    }
    Ok(ids)
}

async fn ensure_feature(
    ctx: &Ctx<'_>,
    spec: &FeatureSpec,
    meter: &Resolved,
) -> Result<(Line, Resolved), ApiError> {
    let key = spec.key.as_str();
    if let Some(existing) = find_feature(ctx.client, key).await? {
        return Ok(compare_feature(spec, meter, existing));
    }
    let meter_id = match meter {
        Resolved::Id(id) if !ctx.opts.dry_run => id,
        Resolved::Id(_) | Resolved::Pending => {
            return Ok((
                Line::new(Kind::Feature, key, Outcome::WouldCreate),
                Resolved::Pending,
            ))
        }
        Resolved::Unavailable => {
            let why = format!("its meter {} is not available", spec.meter);
            return Ok((
                Line::new(Kind::Feature, key, Outcome::Failed(why)),
                Resolved::Unavailable,
            ));
        }
    };
    let body = CreateFeatureRequest::new(spec, meter_id);
    let created: Result<Feature, ApiError> = ctx
        .client
        .send_json(
            "create feature",
            Method::POST,
            "/openmeter/features",
            &[],
            Some(&body),
        )
        .await;
    match created {
        Ok(feature) => Ok((
            Line::new(Kind::Feature, key, Outcome::Created),
            Resolved::Id(feature.id),
        )),
        Err(e) if classify(Call::Catalog, &e) == ErrorClass::Conflict => {
            match find_feature(ctx.client, key).await? {
                Some(existing) => Ok(compare_feature(spec, meter, existing)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn compare_feature(spec: &FeatureSpec, meter: &Resolved, existing: Feature) -> (Line, Resolved) {
    let differences = diff::feature(spec.meter.as_str(), meter.id(), &existing);
    let line = compared(Kind::Feature, spec.key.as_str(), differences);
    (line, Resolved::Id(existing.id))
}

/// The live (not deleted) feature whose key is `key`.
async fn find_feature(client: &OpenMeterClient, key: &str) -> Result<Option<Feature>, ApiError> {
    let filter = [("filter[key][eq]", key)];
    let all: Vec<Feature> = client
        .list_all("list features", "/openmeter/features", &filter)
        .await?;
    Ok(all
        .into_iter()
        .find(|f| f.key == key && f.deleted_at.is_none()))
}
