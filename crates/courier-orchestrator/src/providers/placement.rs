//! Where a create lands: the least loaded provider with room carrying the label asked
//! for, loads counted from the providers' lists plus what this set did since.

use std::collections::HashMap;

use courier_e2b::Error;
use courier_e2b::models::{NewSandbox, SandboxRecord};
use tokio::time::Instant;

use super::{MAX_CREATE_ATTEMPTS, METADATA_PLACEMENT_LABEL, ProviderSet, naming, outer_id};

/// What this set knows of one provider's live sandboxes.
#[derive(Debug, Default)]
pub(super) struct Load {
    /// When it was last listed, and how many sandboxes it had.
    listed: Option<(Instant, usize)>,
    /// Creates minus kills through this set since that list.
    since: i64,
    /// Creates under way at it.
    in_flight: usize,
}

impl Load {
    /// A fresh count from the provider's list.
    pub(super) fn listed(&mut self, at: Instant, count: usize) {
        self.listed = Some((at, count));
        self.since = 0;
    }

    /// A sandbox of it was killed through this set.
    pub(super) fn killed(&mut self) {
        self.since -= 1;
    }

    fn fresh(&self, now: Instant, ttl: std::time::Duration) -> bool {
        self.listed
            .is_some_and(|(at, _)| now.saturating_duration_since(at) < ttl)
    }

    /// Live sandboxes counting creates in flight; `None` before any list.
    fn live(&self) -> Option<u64> {
        let (_, count) = self.listed?;
        let settled = (i64::try_from(count).unwrap_or(i64::MAX) + self.since).max(0);
        Some(settled.unsigned_abs() + self.in_flight as u64)
    }
}

impl ProviderSet {
    /// Creates a sandbox at the provider placement chooses (see the
    /// [module docs](super)).
    pub(super) async fn place(&self, request: NewSandbox) -> Result<SandboxRecord, Error> {
        let label = request
            .metadata
            .get(METADATA_PLACEMENT_LABEL)
            .or_else(|| self.template_labels.get(&request.template_id))
            .cloned();
        let candidates: Vec<usize> = (0..self.members.len())
            .filter(|i| {
                label
                    .as_ref()
                    .is_none_or(|l| self.members[*i].labels.contains(l))
            })
            .collect();
        if candidates.is_empty() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "no sandbox provider carries the placement label {:?} \
                     (metadata {METADATA_PLACEMENT_LABEL}); labels: {}",
                    label.unwrap_or_default(),
                    self.describe_labels()
                ),
            });
        }
        let unreadable = self.refresh(&candidates).await;
        let mut tried = Vec::new();
        let mut last_error = None;
        while tried.len() < MAX_CREATE_ATTEMPTS {
            let Some(index) = self.reserve(&candidates, &tried, &unreadable) else {
                break;
            };
            tried.push(index);
            let member = &self.members[index];
            let result = member.api.create(request.clone()).await;
            {
                let mut loads = self.loads();
                let load = &mut loads[index];
                load.in_flight = load.in_flight.saturating_sub(1);
                if result.is_ok() {
                    load.since += 1;
                }
            }
            match result {
                Ok(mut record) => {
                    record.sandbox_id = outer_id(&member.name, &record.sandbox_id);
                    tracing::debug!(provider = %member.name, sandbox = %record.sandbox_id, "sandbox placed");
                    return Ok(record);
                }
                // The provider is unreachable or full by its own count: the next one may
                // take it. (A create cut after the provider received it may leave a
                // sandbox there; it carries Courier's metadata, so reconcile ends it.)
                Err(e @ (Error::Transport(_) | Error::RateLimited { .. })) => {
                    tracing::warn!(provider = %member.name, error = %e, "create failed at a provider; trying the next one");
                    last_error = Some(naming(&member.name, e));
                }
                Err(e) => return Err(naming(&member.name, e)),
            }
        }
        if let Some(error) = last_error {
            return Err(error);
        }
        if candidates.iter().all(|i| unreadable.contains_key(i)) {
            let index = candidates[0];
            let reason = unreadable
                .get(&index)
                .map_or_else(String::new, ToString::to_string);
            return Err(Error::Api {
                status: 503,
                code: Some("providers_unavailable".into()),
                message: format!(
                    "no sandbox provider could be counted: provider {}: {reason}",
                    self.members[index].name
                ),
            });
        }
        Err(Error::RateLimited {
            message: self.capacity_message(label.as_deref(), &candidates, &unreadable),
            retry_after: None,
        })
    }

    /// Lists the candidates whose count is stale; those whose list fails, with the error.
    async fn refresh(&self, candidates: &[usize]) -> HashMap<usize, Error> {
        let now = Instant::now();
        let stale: Vec<usize> = {
            let loads = self.loads();
            candidates
                .iter()
                .copied()
                .filter(|i| !loads[*i].fresh(now, self.count_ttl))
                .collect()
        };
        let listed = futures::future::join_all(
            stale
                .iter()
                .map(|i| async move { (*i, self.members[*i].api.list().await) }),
        )
        .await;
        let mut unreadable = HashMap::new();
        let mut loads = self.loads();
        for (index, result) in listed {
            match result {
                Ok(sandboxes) => loads[index].listed(Instant::now(), sandboxes.len()),
                Err(e) => {
                    tracing::warn!(provider = %self.members[index].name, error = %e, "could not count a provider's sandboxes; not placing there");
                    unreadable.insert(index, e);
                }
            }
        }
        unreadable
    }

    /// Picks the least loaded candidate with room not tried yet and counts a create in
    /// flight there, in one step so that concurrent creates see each other.
    fn reserve(
        &self,
        candidates: &[usize],
        tried: &[usize],
        unreadable: &HashMap<usize, Error>,
    ) -> Option<usize> {
        let mut loads = self.loads();
        let index = candidates
            .iter()
            .copied()
            .filter(|i| !tried.contains(i) && !unreadable.contains_key(i))
            .filter_map(|i| {
                let live = loads[i].live()?;
                let room = self.members[i]
                    .capacity
                    .is_none_or(|cap| live < u64::from(cap));
                room.then_some((live, i))
            })
            .min()?
            .1;
        loads[index].in_flight += 1;
        Some(index)
    }

    fn capacity_message(
        &self,
        label: Option<&str>,
        candidates: &[usize],
        unreadable: &HashMap<usize, Error>,
    ) -> String {
        let loads = self.loads();
        let each: Vec<String> = candidates
            .iter()
            .map(|i| {
                let member = &self.members[*i];
                match (
                    unreadable.contains_key(i),
                    loads[*i].live(),
                    member.capacity,
                ) {
                    (true, _, _) | (_, None, _) => format!("{} unreachable", member.name),
                    (_, Some(live), Some(cap)) => format!("{} {live}/{cap}", member.name),
                    (_, Some(live), None) => format!("{} {live}", member.name),
                }
            })
            .collect();
        let which = match label {
            Some(label) => format!("every sandbox provider labelled {label:?}"),
            None => "every sandbox provider".to_owned(),
        };
        format!(
            "{which} is at capacity (live/capacity, the providers' `capacity`): {}",
            each.join(", ")
        )
    }

    fn describe_labels(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{} [{}]", m.name, m.labels.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
