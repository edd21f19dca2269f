//! Templates: named sets of read-only layers a sandbox starts from, with default limits.
//!
//! Today there is one, `base` (alias `base`), assembled from the host's system
//! directories by [`crate::base_layer`] into `<data_dir>/layers/base`. Templates built
//! from recipes are not implemented yet.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::Result;

/// The id (and alias) of the built-in template.
pub const BASE_TEMPLATE: &str = "base";

/// One template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its id.
    pub id: String,
    /// Names that resolve to it (`base`).
    pub aliases: Vec<String>,
    /// Its read-only layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// Default CPU count of its sandboxes.
    pub cpu_count: u32,
    /// Default memory of its sandboxes, in MiB.
    pub memory_mb: u64,
    /// Disk size reported for its sandboxes, in MiB.
    pub disk_size_mb: u64,
    /// When its layers were assembled (or found).
    pub created_at: DateTime<Utc>,
}

/// The templates known to a server.
#[derive(Debug, Clone)]
pub struct Templates {
    templates: Vec<Template>,
}

impl Templates {
    /// Assembles (or finds) the `base` layer under `<data_dir>/layers`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let layer = crate::base_layer::assemble(&data_dir.join("layers").join(BASE_TEMPLATE))?;
        let created_at = std::fs::metadata(&layer)
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now());
        Ok(Self {
            templates: vec![Template {
                id: BASE_TEMPLATE.to_owned(),
                aliases: vec![BASE_TEMPLATE.to_owned()],
                layers: vec![layer],
                cpu_count: 2,
                memory_mb: 1024,
                disk_size_mb: 4096,
                created_at,
            }],
        })
    }

    /// The template called `name` (an id or an alias, optionally with a `:tag`, which is
    /// ignored because templates have one version).
    pub fn resolve(&self, name: &str) -> Option<&Template> {
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        self.templates
            .iter()
            .find(|t| t.id == name || t.aliases.iter().any(|a| a == name))
    }

    /// All templates.
    pub fn all(&self) -> &[Template] {
        &self.templates
    }
}
