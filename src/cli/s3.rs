//! S3 settings as flags, for every command: each sets the standard AWS
//! variable it names for this process, over what the environment says, so
//! the object-store client, profile lookup and the executor processes a
//! worker starts all see one configuration. Credentials stay out of flags
//! (a command line is visible to every user of the host): they come from
//! the environment or the profile files.

use clap::Args;

use super::CliError;

#[derive(Debug, Clone, Default, Args)]
pub struct S3Args {
    /// S3 endpoint, for an S3-compatible server (MinIO, Ceph) [env:
    /// AWS_ENDPOINT_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [env: AWS_REGION].
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Allow an S3 endpoint without TLS (http://) [env: AWS_ALLOW_HTTP].
    #[arg(long, global = true)]
    pub s3_allow_http: bool,
    /// The AWS profile whose keys and settings to use from
    /// ~/.aws/credentials and ~/.aws/config [env: AWS_PROFILE].
    #[arg(long, global = true, value_name = "NAME")]
    pub s3_profile: Option<String>,
}

impl S3Args {
    /// The variables the flags set, checked.
    pub fn variables(&self) -> Result<Vec<(&'static str, String)>, CliError> {
        let mut variables = Vec::new();
        if let Some(endpoint) = &self.s3_endpoint {
            let url = url::Url::parse(endpoint).map_err(|error| {
                CliError::Usage(format!("--s3-endpoint '{endpoint}' is not a URL: {error}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(CliError::Usage(format!(
                    "--s3-endpoint '{endpoint}' is not an http:// or https:// URL with a host"
                )));
            }
            variables.push(("AWS_ENDPOINT_URL", endpoint.clone()));
        }
        if let Some(region) = &self.s3_region {
            variables.push(("AWS_REGION", region.clone()));
        }
        if self.s3_allow_http {
            variables.push(("AWS_ALLOW_HTTP", "true".to_string()));
        }
        if let Some(profile) = &self.s3_profile {
            variables.push(("AWS_PROFILE", profile.clone()));
        }
        Ok(variables)
    }

    /// Sets the variables. Call before any thread starts: the environment
    /// is process-wide and not safe to change while others read it.
    pub fn apply(&self) -> Result<(), CliError> {
        for (name, value) in self.variables()? {
            std::env::set_var(name, value);
        }
        Ok(())
    }
}
