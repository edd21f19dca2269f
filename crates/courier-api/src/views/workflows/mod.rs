//! Personas, workflow runs, work chains and issue sessions: what their routes accept and
//! answer with, one module each.
//!
//! Requests refuse unknown fields; the product's camelCase names of the workflow options
//! (`designerCliId`, `maxIterations`, …) are accepted as aliases of the snake_case ones.

mod chains;
mod issues;
mod personas;
mod runs;

pub use chains::{
    ChainDetail, ChainItem, NewChainItem, NewWorkChain, WorkChain, WorkChainList, pr_mode,
};
pub use issues::{
    CardToChain, IssueCard, IssueSession, IssueSessionDetail, IssueSessionList, NewIssueSession,
    StartCard, StartedCard,
};
pub use personas::{Persona, PersonaList, PersonaRequest};
pub use runs::{
    NewWorkflowRun, RunDetail, StepRequest, StepSpec, WorkflowOptions, WorkflowRun,
    WorkflowRunList, WorkflowSpec, WorkflowStep,
};
