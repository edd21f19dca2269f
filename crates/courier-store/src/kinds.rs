//! Closed sets of values (statuses, providers, metrics), stored as their lowercase names.
//! Strings are parsed here, at the edge, with errors naming the field and allowed values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StoreError;

macro_rules! string_enum {
    (
        $(#[$meta:meta])* $name:ident, field = $field:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and wire) spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the stored spelling; the error names `field` and the allowed values.
            pub fn parse_field(s: &str, field: &'static str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::invalid(
                        field,
                        format!(
                            "`{other}` is not one of: {}",
                            [$($text),+].join(", ")
                        ),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, StoreError> {
                Self::parse_field(s, $field)
            }
        }
    };
}

string_enum!(
    /// Where a sandbox is in its lifecycle: `creating → running ⇄ paused → killed`, any
    /// live state `→ error`. `killed` and `error` are final.
    SandboxStatus, field = "status" {
        /// Recorded, provider sandbox and setup in progress.
        Creating => "creating",
        /// The agent runs; counts towards the project's active sandboxes.
        Running => "running",
        /// Frozen; can resume.
        Paused => "paused",
        /// Stopped and destroyed (final).
        Killed => "killed",
        /// Failed, with an error message (final).
        Error => "error",
    }
);

impl SandboxStatus {
    /// Whether the lifecycle allows going from `self` to `to`.
    pub const fn can_transition_to(self, to: SandboxStatus) -> bool {
        use SandboxStatus::*;
        matches!(
            (self, to),
            (Creating, Running | Error | Killed)
                | (Running, Paused | Killed | Error)
                | (Paused, Running | Killed | Error)
        )
    }

    /// `killed` and `error` allow no further transition.
    pub const fn is_final(self) -> bool {
        matches!(self, SandboxStatus::Killed | SandboxStatus::Error)
    }
}

string_enum!(
    /// Whose API a key is for.
    Provider, field = "provider" {
        /// Anthropic (Claude).
        Anthropic => "anthropic",
        /// OpenRouter.
        OpenRouter => "openrouter",
        /// OpenAI.
        OpenAi => "openai",
        /// GitHub (clone, push, pull requests).
        GitHub => "github",
        /// E2B cloud sandboxes.
        E2b => "e2b",
    }
);

string_enum!(
    /// Who wrote a message.
    MessageRole, field = "role" {
        /// The person.
        User => "user",
        /// The agent.
        Assistant => "assistant",
    }
);

string_enum!(
    /// Whether a message is still being written.
    MessageStatus, field = "message status" {
        /// Still receiving appended content.
        Streaming => "streaming",
        /// Finished normally.
        Completed => "completed",
        /// Finished because the stream failed.
        Error => "error",
    }
);

string_enum!(
    /// The pull request step after a kill.
    PrStatus, field = "pr status" {
        /// Being opened.
        Creating => "creating",
        /// Opened.
        Created => "created",
        /// Opening failed.
        Failed => "failed",
        /// Not opened (main/master branch, no remote, no changes).
        Skipped => "skipped",
        /// Merged upstream.
        Merged => "merged",
    }
);

string_enum!(
    /// The learning extraction step after a kill.
    LearningStatus, field = "learning status" {
        /// Queued (the initial value).
        Pending => "pending",
        /// Extracting.
        Running => "running",
        /// Extracted.
        Completed => "completed",
        /// Not extracted (nothing to learn from).
        Skipped => "skipped",
        /// Extraction failed.
        Error => "error",
    }
);

string_enum!(
    /// What kind of knowledge a learning is.
    LearningCategory, field = "category" {
        /// A recurring code pattern.
        Pattern => "pattern",
        /// A preference of the team.
        Preference => "preference",
        /// A trap to avoid.
        Gotcha => "gotcha",
        /// How the project is built.
        Architecture => "architecture",
    }
);

string_enum!(
    /// The state of a template build.
    TemplateBuildStatus, field = "template build status" {
        /// Queued.
        Pending => "pending",
        /// In progress.
        Building => "building",
        /// Ready to use.
        Succeeded => "succeeded",
        /// Failed, with an error.
        Failed => "failed",
    }
);

impl TemplateBuildStatus {
    /// Whether the build is over (and so has a finish time).
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            TemplateBuildStatus::Succeeded | TemplateBuildStatus::Failed
        )
    }
}

string_enum!(
    /// Who bills for usage.
    Service, field = "service" {
        /// E2B sandbox compute.
        E2b => "e2b",
        /// Anthropic tokens.
        Anthropic => "anthropic",
        /// OpenAI tokens.
        OpenAi => "openai",
        /// OpenRouter tokens.
        OpenRouter => "openrouter",
    }
);

string_enum!(
    /// What a usage quantity counts.
    UsageMetric, field = "metric" {
        /// Sandbox wall-clock seconds.
        ComputeSeconds => "compute_seconds",
        /// vCPU-seconds: sandbox seconds times its vCPUs.
        CpuSeconds => "cpu_seconds",
        /// GiB-seconds of memory: sandbox seconds times its memory in GiB.
        MemoryGibSeconds => "memory_gib_seconds",
        /// Prompt tokens.
        InputTokens => "input_tokens",
        /// Completion tokens.
        OutputTokens => "output_tokens",
        /// Tokens read from the prompt cache.
        CacheReadTokens => "cache_read_tokens",
        /// Tokens written to the prompt cache.
        CacheWriteTokens => "cache_write_tokens",
    }
);

string_enum!(
    /// What a step of a workflow does.
    StepRole, field = "role" {
        /// Makes the change.
        Designer => "designer",
        /// Reviews the change and gives a verdict.
        Checker => "checker",
        /// Polishes an accepted change.
        Optimizer => "optimizer",
    }
);

impl Default for StepRole {
    /// The designer: every workflow starts with one.
    fn default() -> Self {
        StepRole::Designer
    }
}

string_enum!(
    /// Where a workflow run, a workflow step, a work chain (or one of its items) or an
    /// issue session is: `pending → running →` one of the final `succeeded`, `failed`,
    /// `cancelled`.
    RunStatus, field = "run status" {
        /// Recorded, not started.
        Pending => "pending",
        /// In progress.
        Running => "running",
        /// Done (final).
        Succeeded => "succeeded",
        /// Ended with an error (final).
        Failed => "failed",
        /// Stopped on request (final).
        Cancelled => "cancelled",
    }
);

impl RunStatus {
    /// Whether this status is final (`succeeded`, `failed`, `cancelled`): nothing moves on
    /// from it, and it has a finish time.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

string_enum!(
    /// A checker's judgement of the designer's change.
    Verdict, field = "verdict" {
        /// Good as it is.
        Pass => "pass",
        /// Needs another designer iteration.
        NeedsChanges => "needs_changes",
    }
);

string_enum!(
    /// How serious an issue card is.
    Severity, field = "severity" {
        /// Cosmetic or minor.
        Low => "low",
        /// Worth fixing.
        Medium => "medium",
        /// Should be fixed soon.
        High => "high",
        /// Must be fixed now.
        Critical => "critical",
    }
);

string_enum!(
    /// How a work chain opens pull requests.
    PrMode, field = "pr mode" {
        /// One pull request for the whole chain.
        Single => "single",
        /// One pull request per item.
        PerIssue => "per_issue",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_spelling() {
        for s in SandboxStatus::ALL {
            assert_eq!(s.as_str().parse::<SandboxStatus>().unwrap(), *s);
        }
        for m in UsageMetric::ALL {
            assert_eq!(m.as_str().parse::<UsageMetric>().unwrap(), *m);
        }
        for r in RunStatus::ALL {
            assert_eq!(r.as_str().parse::<RunStatus>().unwrap(), *r);
        }
        assert_eq!(
            "needs_changes".parse::<Verdict>().unwrap(),
            Verdict::NeedsChanges
        );
        assert_eq!("per_issue".parse::<PrMode>().unwrap(), PrMode::PerIssue);
        let final_ones: Vec<_> = RunStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            final_ones,
            [
                &RunStatus::Succeeded,
                &RunStatus::Failed,
                &RunStatus::Cancelled
            ]
        );
    }

    #[test]
    fn unknown_value_error_names_field_and_allowed_values() {
        let err = "sleeping".parse::<SandboxStatus>().unwrap_err().to_string();
        assert!(err.contains("status"), "{err}");
        assert!(
            err.contains("creating, running, paused, killed, error"),
            "{err}"
        );
    }

    #[test]
    fn lifecycle_graph_matches_the_architecture() {
        use SandboxStatus::*;
        let allowed: Vec<_> = SandboxStatus::ALL
            .iter()
            .flat_map(|a| SandboxStatus::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_transition_to(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Creating, Running),
                (Creating, Killed),
                (Creating, Error),
                (Running, Paused),
                (Running, Killed),
                (Running, Error),
                (Paused, Running),
                (Paused, Killed),
                (Paused, Error),
            ]
        );
        assert!(Killed.is_final() && Error.is_final() && !Paused.is_final());
    }
}
