//! Built for wasm32-wasip2 this is a command component: it exports
//! `wasi:cli/run`, not `opzero:filter/filter`, the mistake of building a
//! filter as a binary.

fn main() {
    println!("not a filter");
}
