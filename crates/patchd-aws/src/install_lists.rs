//! Install lists: the YAML file AWS-RunPatchBaseline's `InstallOverrideList` points at. A node
//! given one installs exactly the listed patches it is missing, whatever its baseline
//! approves, and still reports compliance against its baseline. That is what promotion needs:
//! production installs what staging installed, and a patch released since stays a finding.

use aws_sdk_s3::primitives::ByteStream;
use tracing::instrument;

use crate::client::AwsClients;
use crate::error::AwsError;

/// One entry of an install list: the patch's KBId as DescribeInstancePatches reports it, and
/// its title, which the node also matches when it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPatch {
    pub id: String,
    pub title: String,
}

/// An install list as AWS documents it: a `patches` sequence of `id`/`title` maps.
pub fn install_list_yaml(patches: &[ListedPatch]) -> String {
    let mut yaml = String::from("patches:\n");
    if patches.is_empty() {
        // An empty block sequence is not YAML; an empty flow sequence is.
        return "patches: []\n".to_string();
    }
    for patch in patches {
        yaml.push_str("  - id: ");
        yaml.push_str(&single_quoted(&patch.id));
        yaml.push('\n');
        if !patch.title.is_empty() {
            yaml.push_str("    title: ");
            yaml.push_str(&single_quoted(&patch.title));
            yaml.push('\n');
        }
    }
    yaml
}

/// A YAML single-quoted scalar: nothing inside is special except the quote, written twice.
fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The S3 URL of an install list, as `InstallOverrideList` takes it.
pub fn install_list_url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

impl AwsClients {
    /// Puts an install list where the nodes will read it. Putting the same list again is
    /// harmless, so a resumed task simply puts it again.
    #[instrument(skip(self, patches), fields(patches = patches.len()), err(Display))]
    pub async fn put_install_list(
        &self,
        bucket: &str,
        key: &str,
        patches: &[ListedPatch],
    ) -> Result<(), AwsError> {
        const OPERATION: &str = "PutObject";
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/yaml")
            .body(ByteStream::from(install_list_yaml(patches).into_bytes()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_quote_what_yaml_would_misread() {
        let yaml = install_list_yaml(&[
            ListedPatch { id: "KB5034441".into(), title: "2024-01 Update: it's # 1".into() },
            ListedPatch { id: "openssl.x86_64".into(), title: String::new() },
        ]);
        assert_eq!(
            yaml,
            "patches:\n  - id: 'KB5034441'\n    title: '2024-01 Update: it''s # 1'\n  - id: 'openssl.x86_64'\n"
        );
        assert_eq!(install_list_yaml(&[]), "patches: []\n");
    }
}
