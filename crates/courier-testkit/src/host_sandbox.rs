//! placeholder: HostSandboxApi moves here from courier-api's testing module
