//! Stage plans as bytes: datafusion-proto for DataFusion's operators plus
//! [`ToneCodec`] for tone's own (shuffle reader and writer).
//!
//! Every stage that runs, embedded or on a worker, is decoded from these
//! bytes, so the embedded runtime proves the wire format the cluster uses.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_expr_with_converter, parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_expr_with_converter, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

mod equivalence;

use equivalence::{decode_equivalence, encode_equivalence, EquivalenceNode};

use crate::closure::{placeholder_entry, registry_of, ClosureExec, ClosureId};
use crate::error::{EngineError, Result};
use crate::ids::{JobId, StageId};
use crate::shuffle::{ReadMode, ShuffleReaderExec, ShuffleWriterExec, Slice};
use crate::sink::{FileSinkExec, SinkFormat};
use crate::text::{TextRange, TextSourceExec};

/// Encodes a stage plan (tone nodes included) to bytes.
///
/// Scalar subqueries that already ran travel as literals of their value, so
/// a stage needs no access to the subquery that produced them.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    let bytes = datafusion_proto::bytes::physical_plan_to_bytes_with_proto_converter(
        plan,
        &ToneCodec,
        &ToneProtoConverter,
    )
    .map_err(|error| EngineError::internal(format!("cannot serialize stage plan: {error}")))?;
    Ok(bytes.to_vec())
}

/// datafusion-proto's default conversion, except that a scalar subquery
/// whose value is known is written as that value.
struct ToneProtoConverter;

impl PhysicalProtoConverterExtension for ToneProtoConverter {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // arrow's IPC reader sizes its buffers from the lengths a message
        // claims before it reads them: a claim past the bytes given would
        // allocate without bound (found by fuzzing), so it is refused here.
        if let Some(protobuf::physical_plan_node::PhysicalPlanType::MemoryScan(scan)) =
            &proto.physical_plan_type
        {
            for partition in &scan.partitions {
                crate::ipc_frames::ipc_frames(partition).map_err(|reason| {
                    DataFusionError::Plan(format!("malformed in-memory data in the plan: {reason}"))
                })?;
            }
        }
        proto.try_into_physical_plan_with_context(ctx, self)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalPlanNode> {
        protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(
            Arc::clone(plan),
            codec,
            self,
        )
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalExprNode> {
        if let Some(value) = known_subquery_value(expr) {
            let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(value));
            return serialize_physical_expr_with_converter(&literal, codec, self);
        }
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

fn known_subquery_value(expr: &Arc<dyn PhysicalExpr>) -> Option<ScalarValue> {
    let subquery = (expr.as_ref() as &dyn std::any::Any).downcast_ref::<ScalarSubqueryExpr>()?;
    #[allow(deprecated)] // `index` is the only way to find the value in the shared results.
    let index = subquery.index();
    subquery.results().get(index)
}

thread_local! {
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a thread that is inside [`decode_plan`], whose panics are
/// caught: a panic hook (a fuzzer's, which aborts on any panic) can let
/// those through.
pub fn is_decoding() -> bool {
    DECODING.with(std::cell::Cell::get)
}

/// Decodes a stage plan; `context` supplies the functions and object stores
/// the plan refers to.
///
/// Bytes from the network are untrusted: a panic while decoding them
/// (arrow-ipc 59 panics on malformed IPC inside a memory source: an
/// unknown type, a buffer past its end; found by fuzzing) becomes a plan
/// error naming it, never a crash.
pub fn decode_plan(bytes: &[u8], context: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    DECODING.with(|decoding| decoding.set(true));
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        datafusion_proto::bytes::physical_plan_from_bytes_with_proto_converter(
            bytes,
            context,
            &ToneCodec,
            &ToneProtoConverter,
        )
    }));
    DECODING.with(|decoding| decoding.set(false));
    match decoded {
        Ok(plan) => plan.map_err(|error| match error {
            DataFusionError::Plan(message) => EngineError::Plan { message },
            error => EngineError::internal(format!("cannot deserialize stage plan: {error}")),
        }),
        Err(panic) => Err(EngineError::Plan {
            message: format!(
                "the plan bytes are malformed (decoding them failed: {})",
                crate::cpu::panic_message(&panic)
            ),
        }),
    }
}

/// The extension codec for tone's plan nodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ToneCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct ToneNode {
    #[prost(oneof = "tone_node::Kind", tags = "1, 2, 3, 4, 5")]
    kind: Option<tone_node::Kind>,
}

mod tone_node {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Writer(super::WriterNode),
        #[prost(message, tag = "2")]
        Reader(super::ReaderNode),
        #[prost(message, tag = "3")]
        Closure(super::ClosureNode),
        #[prost(message, tag = "4")]
        Text(super::TextNode),
        #[prost(message, tag = "5")]
        Sink(super::SinkNode),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct WriterNode {
    #[prost(string, tag = "1")]
    job_id: String,
    #[prost(uint32, tag = "2")]
    stage_id: u32,
    #[prost(message, optional, tag = "3")]
    partitioning: Option<protobuf::Partitioning>,
}

/// A user closure: only its id and name travel; the code is found in the
/// decoding session's [`ClosureRegistry`].
#[derive(Clone, PartialEq, prost::Message)]
struct ClosureNode {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(string, tag = "2")]
    name: String,
    /// Empty when the output declares no ordering.
    #[prost(string, tag = "3")]
    ordered_by: String,
    /// Data for this use of the closure (see `PartitionFn::open`).
    #[prost(bytes = "vec", tag = "4")]
    argument: Vec<u8>,
    /// The closure's output schema, so a process without the code (the
    /// coordinator) can still plan around the node.
    #[prost(message, optional, tag = "5")]
    schema: Option<protobuf::Schema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SinkNode {
    #[prost(string, tag = "1")]
    dir: String,
    #[prost(string, tag = "2")]
    format: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TextNode {
    #[prost(message, optional, tag = "1")]
    schema: Option<protobuf::Schema>,
    #[prost(message, repeated, tag = "2")]
    partitions: Vec<TextPartitionNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TextPartitionNode {
    #[prost(message, repeated, tag = "1")]
    ranges: Vec<TextRangeNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TextRangeNode {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(uint64, tag = "2")]
    start: u64,
    #[prost(uint64, tag = "3")]
    end: u64,
    #[prost(uint64, tag = "4")]
    size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReaderNode {
    #[prost(string, tag = "1")]
    job_id: String,
    #[prost(uint32, tag = "2")]
    stage_id: u32,
    #[prost(uint64, tag = "3")]
    map_partitions: u64,
    #[prost(bool, tag = "4")]
    per_map: bool,
    #[prost(message, optional, tag = "5")]
    schema: Option<protobuf::Schema>,
    #[prost(message, optional, tag = "6")]
    partitioning: Option<protobuf::Partitioning>,
    #[prost(string, repeated, tag = "8")]
    locations: Vec<String>,
    #[prost(message, optional, tag = "9")]
    equivalence: Option<EquivalenceNode>,
    /// Empty unless the reader merges sorted map outputs.
    #[prost(message, repeated, tag = "10")]
    merge_ordering: Vec<protobuf::PhysicalSortExprNode>,
    /// Set when the stage was laid out again: what each task reads.
    #[prost(message, repeated, tag = "11")]
    tasks: Vec<TaskSlicesNode>,
    #[prost(bool, tag = "12")]
    laid_out: bool,
    /// The reduce partitions its input was written in (when laid out).
    #[prost(uint64, tag = "13")]
    reduce_partitions: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TaskSlicesNode {
    #[prost(message, repeated, tag = "1")]
    slices: Vec<SliceNode>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SliceNode {
    #[prost(uint32, tag = "1")]
    reduce: u32,
    #[prost(uint32, tag = "2")]
    map_start: u32,
    #[prost(uint32, tag = "3")]
    map_end: u32,
}

impl PhysicalExtensionCodec for ToneCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = ToneNode::decode(buf)
            .map_err(|error| DataFusionError::Internal(format!("bad tone plan node: {error}")))?;
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        match node.kind {
            Some(tone_node::Kind::Writer(writer)) => {
                decode_writer(writer, inputs, &decode_ctx, proto_converter)
            }
            Some(tone_node::Kind::Reader(reader)) => {
                decode_reader(reader, &decode_ctx, proto_converter)
            }
            Some(tone_node::Kind::Closure(closure)) => decode_closure(closure, inputs, ctx),
            Some(tone_node::Kind::Text(text)) => decode_text(text),
            Some(tone_node::Kind::Sink(sink)) => decode_sink(sink, inputs),
            None => Err(DataFusionError::Internal("empty tone plan node".into())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let any = node.as_ref() as &dyn std::any::Any;
        let kind = if let Some(writer) = any.downcast_ref::<ShuffleWriterExec>() {
            tone_node::Kind::Writer(WriterNode {
                job_id: writer.job_id().0.clone(),
                stage_id: writer.stage_id().0,
                partitioning: Some(serialize_partitioning(
                    writer.shuffle_partitioning(),
                    self,
                    proto_converter,
                )?),
            })
        } else if let Some(reader) = any.downcast_ref::<ShuffleReaderExec>() {
            tone_node::Kind::Reader(encode_reader(reader, self, proto_converter)?)
        } else if let Some(closure) = any.downcast_ref::<ClosureExec>() {
            tone_node::Kind::Closure(ClosureNode {
                id: closure.id().0,
                name: closure.closure_name().to_string(),
                ordered_by: closure.ordered_by().unwrap_or_default().to_string(),
                argument: closure.argument().to_vec(),
                schema: Some(protobuf::Schema::try_from(closure.schema().as_ref())?),
            })
        } else if let Some(text) = any.downcast_ref::<TextSourceExec>() {
            tone_node::Kind::Text(encode_text(text)?)
        } else if let Some(sink) = any.downcast_ref::<FileSinkExec>() {
            tone_node::Kind::Sink(SinkNode {
                dir: sink.dir().to_str().map(str::to_string).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "output folder {} is not UTF-8",
                        sink.dir().display()
                    ))
                })?,
                format: sink.format().name().to_string(),
            })
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "tone cannot serialize plan node {}",
                node.name()
            )));
        };
        ToneNode { kind: Some(kind) }
            .encode(buf)
            .map_err(|error| DataFusionError::Internal(format!("encoding tone node: {error}")))
    }
}

fn encode_reader(
    reader: &ShuffleReaderExec,
    codec: &ToneCodec,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<ReaderNode> {
    let properties = reader.properties();
    let merge_ordering = match reader.merge_ordering() {
        Some(ordering) => {
            serialize_physical_sort_exprs(ordering.iter().cloned(), codec, proto_converter)?
        }
        None => Vec::new(),
    };
    Ok(ReaderNode {
        job_id: reader.job_id().0.clone(),
        stage_id: reader.stage_id().0,
        map_partitions: reader.map_partitions() as u64,
        per_map: reader.mode() == ReadMode::PerMap,
        schema: Some(protobuf::Schema::try_from(reader.schema().as_ref())?),
        partitioning: Some(serialize_partitioning(
            &properties.partitioning,
            codec,
            proto_converter,
        )?),
        locations: reader.locations().to_vec(),
        equivalence: Some(encode_equivalence(
            &properties.eq_properties,
            codec,
            proto_converter,
        )?),
        merge_ordering,
        tasks: reader
            .tasks()
            .unwrap_or_default()
            .iter()
            .map(|slices| TaskSlicesNode {
                slices: slices
                    .iter()
                    .map(|slice| SliceNode {
                        reduce: slice.reduce,
                        map_start: slice.maps.start,
                        map_end: slice.maps.end,
                    })
                    .collect(),
            })
            .collect(),
        laid_out: reader.tasks().is_some(),
        reduce_partitions: reader.reduce_partitions() as u64,
    })
}

fn decode_writer(
    node: WriterNode,
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &PhysicalPlanDecodeContext<'_>,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let [input] = inputs else {
        return Err(DataFusionError::Internal(format!(
            "ShuffleWriterExec has one input, the plan gave {}",
            inputs.len()
        )));
    };
    let partitioning = parse_protobuf_partitioning(
        node.partitioning.as_ref(),
        ctx,
        input.schema().as_ref(),
        proto_converter,
    )?
    .ok_or_else(|| DataFusionError::Internal("ShuffleWriterExec without partitioning".into()))?;
    Ok(Arc::new(ShuffleWriterExec::try_new(
        JobId(node.job_id),
        StageId(node.stage_id),
        Arc::clone(input),
        partitioning,
    )?))
}

fn decode_reader(
    node: ReaderNode,
    ctx: &PhysicalPlanDecodeContext<'_>,
    proto_converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = node
        .schema
        .as_ref()
        .ok_or_else(|| DataFusionError::Internal("ShuffleReaderExec without schema".into()))?;
    let schema = Arc::new(Schema::try_from(schema)?);
    let partitioning =
        parse_protobuf_partitioning(node.partitioning.as_ref(), ctx, &schema, proto_converter)?
            .unwrap_or(Partitioning::UnknownPartitioning(1));
    let equivalence = match &node.equivalence {
        Some(equivalence) => decode_equivalence(equivalence, &schema, ctx, proto_converter)?,
        None => EquivalenceProperties::new(Arc::clone(&schema)),
    };
    let merge_ordering = LexOrdering::new(parse_physical_sort_exprs(
        &node.merge_ordering,
        ctx,
        &schema,
        proto_converter,
    )?);
    let properties = PlanProperties::new(
        equivalence,
        partitioning,
        EmissionType::Incremental,
        Boundedness::Bounded,
    );
    let mode = if node.per_map {
        ReadMode::PerMap
    } else {
        ReadMode::ReducePartition
    };
    let map_partitions = usize::try_from(node.map_partitions)
        .map_err(|_| DataFusionError::Internal("map partition count overflows usize".into()))?;
    let mut reader = ShuffleReaderExec::new(
        JobId(node.job_id),
        StageId(node.stage_id),
        map_partitions,
        mode,
        properties,
    );
    if let Some(ordering) = merge_ordering {
        reader = reader.with_merge_ordering(ordering);
    }
    if node.laid_out {
        // The partitioning decoded above already counts the tasks; the
        // slices are checked against the reduce partitions they name.
        let tasks = node
            .tasks
            .into_iter()
            .map(|task| {
                task.slices
                    .into_iter()
                    .map(|slice| Slice {
                        reduce: slice.reduce,
                        maps: slice.map_start..slice.map_end,
                    })
                    .collect()
            })
            .collect();
        let reduces = usize::try_from(node.reduce_partitions)
            .map_err(|_| DataFusionError::Plan("reduce partition count overflows usize".into()))?;
        reader = reader.with_decoded_tasks(tasks, reduces)?;
    }
    Ok(Arc::new(reader.with_locations(node.locations)?))
}

fn decode_closure(
    node: ClosureNode,
    inputs: &[Arc<dyn ExecutionPlan>],
    ctx: &TaskContext,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let [input] = inputs else {
        return Err(DataFusionError::Internal(format!(
            "ClosureExec has one input, the plan gave {}",
            inputs.len()
        )));
    };
    let id = ClosureId(node.id);
    let registry = registry_of(ctx)?;
    let entry = if registry.is_placeholder() {
        let schema = node
            .schema
            .as_ref()
            .ok_or_else(|| DataFusionError::Internal("ClosureExec without schema".into()))?;
        placeholder_entry(&node.name, Arc::new(Schema::try_from(schema)?))
    } else {
        registry.resolve(id, &node.name)?
    };
    let ordered_by = Some(node.ordered_by).filter(|column| !column.is_empty());
    Ok(Arc::new(ClosureExec::try_new(
        Arc::clone(input),
        id,
        entry,
        Arc::new(node.argument),
        ordered_by,
    )?))
}

fn encode_text(text: &TextSourceExec) -> DfResult<TextNode> {
    let mut partitions = Vec::new();
    for ranges in text.ranges() {
        let mut nodes = Vec::new();
        for range in ranges {
            nodes.push(TextRangeNode {
                path: range.location.clone(),
                start: range.start,
                end: range.end,
                size: range.size,
            });
        }
        partitions.push(TextPartitionNode { ranges: nodes });
    }
    Ok(TextNode {
        schema: Some(protobuf::Schema::try_from(text.schema().as_ref())?),
        partitions,
    })
}

fn decode_text(node: TextNode) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = node
        .schema
        .as_ref()
        .ok_or_else(|| DataFusionError::Internal("TextSourceExec without schema".into()))?;
    let schema = Arc::new(Schema::try_from(schema)?);
    let partitions = node
        .partitions
        .into_iter()
        .map(|partition| {
            partition
                .ranges
                .into_iter()
                .map(|range| TextRange {
                    location: range.path,
                    size: range.size,
                    start: range.start,
                    end: range.end,
                })
                .collect()
        })
        .collect();
    Ok(Arc::new(TextSourceExec::from_ranges(partitions, schema)?))
}

fn decode_sink(
    node: SinkNode,
    inputs: &[Arc<dyn ExecutionPlan>],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let [input] = inputs else {
        return Err(DataFusionError::Internal(format!(
            "FileSinkExec has one input, the plan gave {}",
            inputs.len()
        )));
    };
    let format = SinkFormat::from_name(&node.format).ok_or_else(|| {
        DataFusionError::Internal(format!("unknown output format '{}'", node.format))
    })?;
    Ok(Arc::new(FileSinkExec::new(
        Arc::clone(input),
        node.dir.into(),
        format,
    )))
}
