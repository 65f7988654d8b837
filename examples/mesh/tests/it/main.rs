//! The mesh example's tests: deployed from `template.yaml` on the local emulator, and its
//! graceful shutdown under a Runtime API played by the test.

mod deployed;
mod shutdown;
