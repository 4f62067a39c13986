//! The framing of an Arrow IPC stream: a length-prefixed flatbuffer
//! message, then its body. arrow's reader sizes buffers from the lengths a
//! message claims before reading them, so bytes from the network are
//! walked here first; every frame returned lies inside the stream.

use arrow::ipc::Message;

/// What is wrong with a stream's framing.
#[derive(Debug, thiserror::Error)]
pub enum IpcFrameError {
    #[error("a message length at byte {at} is cut off")]
    TruncatedLength { at: usize },
    #[error("a message at byte {at} claims {claimed} bytes of metadata, past the end")]
    TruncatedMetadata { at: usize, claimed: u32 },
    #[error("the message at byte {at} is not a valid IPC message: {reason}")]
    BadMetadata { at: usize, reason: String },
    #[error("a message at byte {at} claims a body of {claimed} bytes, past the end")]
    TruncatedBody { at: usize, claimed: i64 },
}

/// One message of the stream: its metadata bytes (decoded as `message`)
/// and its body bytes.
pub struct IpcFrame<'a> {
    pub metadata: &'a [u8],
    pub message: Message<'a>,
    pub body: &'a [u8],
}

/// The messages of `stream` up to its end marker, or to its end (as
/// arrow's reader, which takes the end of the bytes at a message boundary
/// as the end of the stream).
pub fn ipc_frames(stream: &[u8]) -> Result<Vec<IpcFrame<'_>>, IpcFrameError> {
    let word = |at: usize| {
        let bytes = stream
            .get(at..at.saturating_add(4))
            .ok_or(IpcFrameError::TruncatedLength { at })?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < stream.len() {
        let start = at;
        let mut length = word(at)?;
        at += 4;
        if length == 0xFFFF_FFFF {
            length = word(at)?; // The continuation marker, then the length.
            at += 4;
        }
        if length == 0 {
            break; // End-of-stream marker.
        }
        let metadata =
            stream
                .get(at..at + length as usize)
                .ok_or(IpcFrameError::TruncatedMetadata {
                    at: start,
                    claimed: length,
                })?;
        at += length as usize;
        let message =
            arrow::ipc::root_as_message(metadata).map_err(|error| IpcFrameError::BadMetadata {
                at: start,
                reason: error.to_string(),
            })?;
        let truncated_body = IpcFrameError::TruncatedBody {
            at: start,
            claimed: message.bodyLength(),
        };
        let body = usize::try_from(message.bodyLength())
            .ok()
            .and_then(|length| stream.get(at..at.checked_add(length)?))
            .ok_or(truncated_body)?;
        at += body.len();
        frames.push(IpcFrame {
            metadata,
            message,
            body,
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::StreamWriter;
    use arrow::record_batch::RecordBatch;

    use super::*;

    fn stream() -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
        )
        .expect("batch");
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &schema).expect("writer");
        writer.write(&batch).expect("write");
        writer.finish().expect("finish");
        drop(writer);
        bytes
    }

    #[test]
    fn frames_of_a_stream_are_its_schema_and_batches() {
        let bytes = stream();
        let frames = ipc_frames(&bytes).expect("frames");
        let headers: Vec<_> = frames
            .iter()
            .map(|frame| frame.message.header_type())
            .collect();
        assert_eq!(
            headers,
            [
                arrow::ipc::MessageHeader::Schema,
                arrow::ipc::MessageHeader::RecordBatch
            ]
        );
        assert!(ipc_frames(&[]).expect("empty").is_empty());
    }

    #[test]
    fn every_cut_of_a_stream_inside_a_message_is_refused() {
        let bytes = stream();
        let boundaries: Vec<usize> = {
            let frames = ipc_frames(&bytes).expect("frames");
            let mut end = 0;
            frames
                .iter()
                .map(|frame| {
                    end += 8 + frame.metadata.len() + frame.body.len();
                    end
                })
                .collect()
        };
        for cut in 1..bytes.len() - 8 {
            let result = ipc_frames(&bytes[..cut]);
            assert_eq!(result.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
    }
}
