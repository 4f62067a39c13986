//! The AWS shared profile files, for the settings the environment leaves
//! unset: `~/.aws/credentials` (keys) and `~/.aws/config` (region,
//! endpoint), or the files `AWS_SHARED_CREDENTIALS_FILE` and
//! `AWS_CONFIG_FILE` name. The profile is `AWS_PROFILE`, else `default`.
//! object_store reads neither file, and the format is a few lines of INI.

use std::path::{Path, PathBuf};

use object_store::aws::AmazonS3ConfigKey;

/// The settings of the profile in effect, from this process's
/// environment and home folder. A missing file is no settings.
pub(super) fn settings_from_env() -> Vec<(AmazonS3ConfigKey, String)> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let home = var("HOME").unwrap_or_default();
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE").unwrap_or(home.join(".aws/credentials"));
    let config = var("AWS_CONFIG_FILE").unwrap_or(home.join(".aws/config"));
    let mut settings = read_section(&credentials, &profile);
    // In the config file a profile other than the default is `[profile NAME]`.
    let section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    settings.extend(read_section(&config, &section));
    settings
}

fn read_section(path: &Path, section: &str) -> Vec<(AmazonS3ConfigKey, String)> {
    std::fs::read_to_string(path)
        .map(|text| parse_section(&text, section))
        .unwrap_or_default()
}

/// The S3 settings in `[section]` of INI `text`; keys tone does not know
/// are skipped.
fn parse_section(text: &str, section: &str) -> Vec<(AmazonS3ConfigKey, String)> {
    let mut inside = false;
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| inside) else {
            continue;
        };
        let key = match key.trim() {
            "aws_access_key_id" => AmazonS3ConfigKey::AccessKeyId,
            "aws_secret_access_key" => AmazonS3ConfigKey::SecretAccessKey,
            "aws_session_token" => AmazonS3ConfigKey::Token,
            "region" => AmazonS3ConfigKey::Region,
            "endpoint_url" => AmazonS3ConfigKey::Endpoint,
            _ => continue,
        };
        settings.push((key, value.trim().to_string()));
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_section_counts() {
        let text = "\
[default]
aws_access_key_id = DEFAULTKEY
# a comment
[profile test]
aws_access_key_id=TESTKEY
aws_secret_access_key = secret
region = eu-west-1
output = json
";
        let settings = parse_section(text, "profile test");
        assert_eq!(
            settings,
            vec![
                (AmazonS3ConfigKey::AccessKeyId, "TESTKEY".to_string()),
                (AmazonS3ConfigKey::SecretAccessKey, "secret".to_string()),
                (AmazonS3ConfigKey::Region, "eu-west-1".to_string()),
            ]
        );
        assert_eq!(parse_section(text, "default").len(), 1);
        assert!(parse_section(text, "missing").is_empty());
    }
}
