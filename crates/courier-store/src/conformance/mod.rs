//! The conformance suite: what every [`Store`] backend must do, as plain async
//! functions taking `&dyn Store` (each panics on failure).
//!
//! A backend runs the whole suite with one macro call in an integration test, given an
//! async setup function returning a fresh, empty store (or `None` to skip). The test
//! crate needs `tokio` with the `macros` and `rt-multi-thread` features.
//!
//! ```no_run
//! async fn setup() -> Option<courier_store::conformance::Fixture> {
//!     let store = courier_store::SqliteStore::in_memory().await.unwrap();
//!     Some(courier_store::conformance::Fixture::new(std::sync::Arc::new(store)))
//! }
//! courier_store::conformance_tests!(setup);
//! # fn main() {}
//! ```

// The suite is test code compiled into the library for backends' tests: a failed unwrap
// is a failed conformance test.
#![allow(clippy::unwrap_used)]

mod accounts;
mod learnings;
mod messages;
mod races;
mod sandboxes;
mod seed;
mod settings;
mod usage;
mod workflows;

pub use accounts::{provider_keys_at_user_and_project_level, users_and_projects_round_trip};
pub use learnings::{
    learning_versions_keep_one_active, learnings_and_their_version_are_recorded_together,
    template_builds_record_progress,
};
pub use messages::{
    concurrent_messages_get_sequence_numbers_without_gaps,
    failed_transaction_leaves_nothing_behind,
    group_appends_store_each_message_and_skip_finished_ones,
    messages_append_and_replay_in_sequence_order, messages_append_text_and_raw_lines_together,
};
pub use races::{
    racing_creates_never_pass_the_quota, racing_transitions_keep_the_counter_exact,
    sandbox_quotas_count_live_sandboxes_of_the_user_and_the_project,
};
pub use sandboxes::{
    invalid_transition_names_both_states, lifecycle_transitions_stamp_times_and_count_running,
    list_filters_by_status_deleted_tool_project_and_user, pagination_is_stable_under_inserts,
    sandbox_round_trip, soft_delete_restore_and_purge_keep_the_counter_exact,
    stale_expected_status_is_a_conflict,
};
pub use settings::project_settings_are_replaced_whole;
pub use usage::{cost_rates_apply_from_their_start, usage_totals_per_sandbox_project_and_day};
pub use workflows::{
    issue_sessions_finish_once_with_their_cards, personas_round_trip_with_unique_names,
    sandboxes_filter_by_run_and_issue_session, work_chains_list_by_project_and_unfinished,
    work_chains_store_items_together, workflow_runs_change_state_by_compare_and_set,
    workflow_runs_list_by_project_chain_and_unfinished,
    workflow_steps_are_numbered_and_finish_once,
};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Store;

/// A store under test, and how to clean up after it.
pub struct Fixture {
    /// The fresh, empty store.
    pub store: Arc<dyn Store>,
    teardown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Fixture {
    /// A store that needs no cleanup.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Fixture {
            store,
            teardown: None,
        }
    }

    /// Runs `teardown` after a test passes (e.g. drop a Postgres schema). A failed test
    /// leaves its data for inspection.
    pub fn with_teardown(
        store: Arc<dyn Store>,
        teardown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Fixture {
            store,
            teardown: Some(Box::pin(teardown)),
        }
    }

    /// Drops the store and runs the teardown.
    pub async fn finish(self) {
        drop(self.store);
        if let Some(teardown) = self.teardown {
            teardown.await;
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance test, each calling `$setup().await`
/// for a fresh [`Fixture`] (`None` skips the test).
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            users_and_projects_round_trip,
            sandbox_round_trip,
            lifecycle_transitions_stamp_times_and_count_running,
            invalid_transition_names_both_states,
            stale_expected_status_is_a_conflict,
            racing_transitions_keep_the_counter_exact,
            sandbox_quotas_count_live_sandboxes_of_the_user_and_the_project,
            racing_creates_never_pass_the_quota,
            soft_delete_restore_and_purge_keep_the_counter_exact,
            list_filters_by_status_deleted_tool_project_and_user,
            pagination_is_stable_under_inserts,
            messages_append_and_replay_in_sequence_order,
            messages_append_text_and_raw_lines_together,
            group_appends_store_each_message_and_skip_finished_ones,
            concurrent_messages_get_sequence_numbers_without_gaps,
            failed_transaction_leaves_nothing_behind,
            usage_totals_per_sandbox_project_and_day,
            cost_rates_apply_from_their_start,
            learning_versions_keep_one_active,
            learnings_and_their_version_are_recorded_together,
            provider_keys_at_user_and_project_level,
            template_builds_record_progress,
            project_settings_are_replaced_whole,
            personas_round_trip_with_unique_names,
            workflow_runs_change_state_by_compare_and_set,
            workflow_runs_list_by_project_chain_and_unfinished,
            workflow_steps_are_numbered_and_finish_once,
            work_chains_store_items_together,
            work_chains_list_by_project_and_unfinished,
            issue_sessions_finish_once_with_their_cards,
            sandboxes_filter_by_run_and_issue_session,
        );
    };
    (@each $setup:path; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fixture) = $setup().await else { return };
                $crate::conformance::$name(&*fixture.store).await;
                fixture.finish().await;
            }
        )+
    };
}
