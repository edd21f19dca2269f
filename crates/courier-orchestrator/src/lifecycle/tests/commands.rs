//! The shell lines around the agent's run.

use courier_tools::tracked;

use crate::lifecycle::{agent_command, reattach_command};

#[test]
fn the_agent_command_copies_its_output_and_keeps_its_exit_code() {
    let cmd = agent_command("cd /p && claude -p 'x'");
    assert!(cmd.contains(&format!(
        "{{ {} ; }} | tee /tmp/courier-agent/out.log",
        tracked("cd /p && claude -p 'x'")
    )));
    assert!(cmd.contains("PIPESTATUS[0]") && cmd.ends_with("exit $code"));
    assert!(reattach_command(3).starts_with("tail -n +4 -f"));
}
