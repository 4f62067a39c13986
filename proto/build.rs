//! Compiles proto/tone.proto with protox (pure Rust): no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/tone.proto");
    let descriptors = protox::compile(["proto/tone.proto"], ["proto"])?;
    // A stage plan is encoded once and sent to every task of the stage as
    // slices of that one buffer.
    tonic_prost_build::configure()
        .bytes(".tone.v1.AssignTask.plan")
        .compile_fds(descriptors)?;
    Ok(())
}
