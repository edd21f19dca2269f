//! E2B's `/volumes` routes (API key): create, list, get and delete volumes. The content
//! of a volume is [`crate::Volume`]'s.

use reqwest::Method;

use super::{Client, segment};
use crate::models::{NewVolume, VolumeAndToken, VolumeInfo};
use crate::{Error, NotFoundKind, Result};

impl Client {
    /// Creates a volume (`POST /volumes`). Never retried (a retry could make two).
    /// Prefer [`Volume::create`](crate::Volume::create).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let created = client.create_volume("data").await?;
    /// println!("{} {}", created.volume_id, created.name);
    /// # Ok(()) }
    /// ```
    pub async fn create_volume(&self, name: &str) -> Result<VolumeAndToken> {
        let url = self.endpoint("/volumes", &[])?;
        let body = NewVolume {
            name: name.to_owned(),
        };
        self.json(Method::POST, url, Some(&body), false)
            .await
            .map_err(volume_not_found)
    }

    /// The API key's volumes (`GET /volumes`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// for volume in client.list_volumes().await? {
    ///     println!("{}", volume.name);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let url = self.endpoint("/volumes", &[])?;
        self.json(Method::GET, url, None::<&()>, true).await
    }

    /// One volume with its content token (`GET /volumes/{id}`); unknown (or another
    /// key's) → [`Error::NotFound`] of kind [`NotFoundKind::Volume`].
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let volume = client.get_volume("volume-id").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_volume(&self, volume_id: &str) -> Result<VolumeAndToken> {
        let url = self.endpoint(&format!("/volumes/{}", segment(volume_id)), &[])?;
        self.json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(volume_not_found)
    }

    /// Deletes a volume and its content (`DELETE /volumes/{id}`): `false` when it did not
    /// exist. A volume mounted by a sandbox is refused ([`Error::Api`], 409, on
    /// courier-sandboxd).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let deleted = client.delete_volume("volume-id").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_volume(&self, volume_id: &str) -> Result<bool> {
        let url = self.endpoint(&format!("/volumes/{}", segment(volume_id)), &[])?;
        match self.send(Method::DELETE, url, None::<&()>, true).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A 404 of a volume route is about a volume, not a sandbox.
fn volume_not_found(error: Error) -> Error {
    match error {
        Error::NotFound { message, .. } => Error::NotFound {
            kind: NotFoundKind::Volume,
            message,
        },
        other => other,
    }
}
