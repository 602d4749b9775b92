//! Shopping cart (being written).
fn main() {}
