//! Templates across providers: built at every provider, followed as one build, listed
//! only where every provider has them.
//!
//! The build id handed out names each provider's template and build:
//! `<provider>:<template id>:<build id>` per provider, joined by `,`, with `%`, `:` and
//! `,` inside ids percent-escaped. Any process with the same providers can follow it.

use courier_e2b::{
    BuildReason, BuildRequested, BuildState, BuildStatus, Error, NotFoundKind, Recipe, TemplateInfo,
};

use super::{ProviderSet, naming};

/// One provider's part of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub provider: String,
    pub template_id: String,
    pub build_id: String,
}

fn escape(text: &str) -> String {
    text.replace('%', "%25")
        .replace(':', "%3A")
        .replace(',', "%2C")
}

fn unescape(text: &str) -> String {
    text.replace("%2C", ",")
        .replace("%3A", ":")
        .replace("%25", "%")
}

/// The build id of a build made of `parts`.
pub(super) fn encode(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}",
                p.provider,
                escape(&p.template_id),
                escape(&p.build_id)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The parts of a build id made by [`encode`]; `None` when it is not one.
pub(super) fn decode(build_id: &str) -> Option<Vec<Part>> {
    build_id
        .split(',')
        .map(|part| {
            let mut fields = part.split(':');
            let (provider, template, build) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || provider.is_empty() {
                return None;
            }
            Some(Part {
                provider: provider.to_owned(),
                template_id: unescape(template),
                build_id: unescape(build),
            })
        })
        .collect()
}

/// Starts the build at every provider. When one refuses, the others' builds go on (a
/// template there does no harm) and the refusal is returned, naming the provider.
pub(super) async fn build_everywhere(
    set: &ProviderSet,
    name: &str,
    recipe: Recipe,
) -> Result<BuildRequested, Error> {
    let started = futures::future::join_all(
        set.members
            .iter()
            .map(|m| m.api.build_template(name, recipe.clone())),
    )
    .await;
    let mut parts = Vec::with_capacity(started.len());
    let mut first = None;
    for (member, result) in set.members.iter().zip(started) {
        let requested = result.map_err(|e| naming(&member.name, e))?;
        parts.push(Part {
            provider: member.name.clone(),
            template_id: requested.template_id.clone(),
            build_id: requested.build_id.clone(),
        });
        first.get_or_insert(requested);
    }
    let first = first.ok_or_else(|| Error::InvalidArgument {
        message: "no sandbox provider to build at".into(),
    })?;
    Ok(BuildRequested {
        template_id: name.to_owned(),
        build_id: encode(&parts),
        ..first
    })
}

/// The build's state over every provider: `error` if any failed (its reason naming the
/// provider), `ready` when all are, else `building` (or `waiting` while none started).
/// The log lines are the first provider's, from `logs_offset`.
pub(super) async fn merged_status(
    set: &ProviderSet,
    template_id: &str,
    build_id: &str,
    logs_offset: usize,
) -> Result<BuildStatus, Error> {
    let not_ours = || Error::NotFound {
        kind: NotFoundKind::Template,
        message: format!(
            "build {build_id:?} was not started by these providers ({})",
            set.names().join(", ")
        ),
    };
    let parts = decode(build_id).ok_or_else(not_ours)?;
    let mut members = Vec::with_capacity(parts.len());
    for part in &parts {
        let member = set
            .members
            .iter()
            .find(|m| m.name == part.provider)
            .ok_or_else(not_ours)?;
        members.push(member);
    }
    let statuses = futures::future::join_all(members.iter().zip(&parts).map(|(m, p)| {
        m.api
            .template_build_status(&p.template_id, &p.build_id, logs_offset)
    }))
    .await;
    let mut merged: Option<BuildStatus> = None;
    let mut states = Vec::with_capacity(statuses.len());
    let mut failure: Option<BuildReason> = None;
    for (member, status) in members.iter().zip(statuses) {
        let status = status.map_err(|e| naming(&member.name, e))?;
        states.push(status.status);
        if status.status == BuildState::Error && failure.is_none() {
            let reason = status.reason.clone().unwrap_or(BuildReason {
                message: "the build failed without a reason".into(),
                step: None,
            });
            failure = Some(BuildReason {
                message: format!("provider {}: {}", member.name, reason.message),
                step: reason.step,
            });
        }
        merged.get_or_insert(status);
    }
    let mut merged = merged.ok_or_else(not_ours)?;
    merged.template_id = template_id.to_owned();
    merged.build_id = build_id.to_owned();
    merged.status = merge_states(&states);
    merged.reason = failure;
    Ok(merged)
}

fn merge_states(states: &[BuildState]) -> BuildState {
    if states.contains(&BuildState::Error) {
        BuildState::Error
    } else if states.iter().all(|s| *s == BuildState::Ready) {
        BuildState::Ready
    } else if states.iter().all(|s| *s == BuildState::Waiting) {
        BuildState::Waiting
    } else {
        BuildState::Building
    }
}

/// The templates every provider has, by name (their ids differ per provider): the
/// first provider's entry, keeping only the names every provider knows, with the build
/// state merged as [`merged_status`] does.
pub(super) async fn common_templates(set: &ProviderSet) -> Result<Vec<TemplateInfo>, Error> {
    let listed =
        futures::future::join_all(set.members.iter().map(|m| m.api.list_templates())).await;
    let mut per_provider = Vec::with_capacity(listed.len());
    for (member, result) in set.members.iter().zip(listed) {
        per_provider.push(result.map_err(|e| naming(&member.name, e))?);
    }
    Ok(intersect(&per_provider))
}

/// See [`common_templates`].
pub(super) fn intersect(per_provider: &[Vec<TemplateInfo>]) -> Vec<TemplateInfo> {
    let Some((first, others)) = per_provider.split_first() else {
        return Vec::new();
    };
    let everywhere = |name: &str| {
        others
            .iter()
            .map(|templates| templates.iter().find(|t| t.is_named(name)))
            .collect::<Option<Vec<_>>>()
    };
    let mut out = Vec::new();
    for template in first {
        let keys = std::iter::once(&template.template_id)
            .chain(&template.aliases)
            .chain(&template.names);
        let common: Vec<&String> = keys.filter(|k| everywhere(k).is_some()).collect();
        let Some(key) = common.first() else {
            continue;
        };
        let mut states = vec![template.build_status];
        states.extend(
            everywhere(key)
                .into_iter()
                .flatten()
                .map(|t| t.build_status),
        );
        let mut info = template.clone();
        if !common.contains(&&template.template_id) {
            // Its id is this provider's own; the name is what every provider answers to.
            info.template_id = (*key).clone();
        }
        info.aliases.retain(|a| common.contains(&a));
        info.names.retain(|n| common.contains(&n));
        info.build_status = merge_states(&states);
        out.push(info);
    }
    out
}
