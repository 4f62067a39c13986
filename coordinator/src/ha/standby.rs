//! A standby coordinator's answer to every call: not an error of the
//! request, but where the leader is. The status is UNAVAILABLE (so
//! clients and workers try again) with the leader's URL in the
//! `tone-leader` metadata and in the message.

use futures::stream::BoxStream;
use tone_proto::v1 as pb;
use tone_proto::v1::jobs_server::Jobs;
use tone_proto::v1::worker_control_server::WorkerControl;
use tonic::{Request, Response, Status, Streaming};

/// The metadata key a standby names the leader under.
pub const LEADER_METADATA: &str = "tone-leader";

#[derive(Clone)]
pub struct Standby {
    client: etcd_client::Client,
    prefix: String,
}

impl Standby {
    pub fn new(client: etcd_client::Client, prefix: String) -> Self {
        Self { client, prefix }
    }

    async fn refuse(&self) -> Status {
        let leader = super::leader_url(&mut self.client.clone(), &self.prefix).await;
        let Some(leader) = leader else {
            return Status::unavailable(
                "this coordinator stands by and no coordinator leads yet; try again",
            );
        };
        let mut status = Status::unavailable(format!(
            "this coordinator stands by; the leader is at {leader}"
        ));
        if let Ok(value) = leader.parse() {
            status.metadata_mut().insert(LEADER_METADATA, value);
        }
        status
    }
}

#[tonic::async_trait]
impl Jobs for Standby {
    type WatchStream = BoxStream<'static, Result<pb::JobStatus, Status>>;
    type FetchBinaryStream = BoxStream<'static, Result<pb::BinaryChunk, Status>>;

    async fn has_binary(
        &self,
        _: Request<pb::BinaryRef>,
    ) -> Result<Response<pb::HasBinaryResponse>, Status> {
        Err(self.refuse().await)
    }

    async fn upload_binary(
        &self,
        _: Request<Streaming<pb::BinaryChunk>>,
    ) -> Result<Response<pb::HasBinaryResponse>, Status> {
        Err(self.refuse().await)
    }

    async fn fetch_binary(
        &self,
        _: Request<pb::BinaryRef>,
    ) -> Result<Response<Self::FetchBinaryStream>, Status> {
        Err(self.refuse().await)
    }

    async fn submit(
        &self,
        _: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        Err(self.refuse().await)
    }

    async fn status(
        &self,
        _: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        Err(self.refuse().await)
    }

    async fn watch(
        &self,
        _: Request<pb::JobStatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(self.refuse().await)
    }

    async fn cancel(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        Err(self.refuse().await)
    }

    async fn release(
        &self,
        _: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        Err(self.refuse().await)
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(self.refuse().await)
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Err(self.refuse().await)
    }

    async fn detail(
        &self,
        _: Request<pb::JobStatusRequest>,
    ) -> Result<Response<pb::JobDetailResponse>, Status> {
        Err(self.refuse().await)
    }
}

#[tonic::async_trait]
impl WorkerControl for Standby {
    type SessionStream = BoxStream<'static, Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        _: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(self.refuse().await)
    }
}
