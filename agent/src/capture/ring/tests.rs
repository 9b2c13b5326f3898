use super::*;

#[test]
fn a_block_size_that_is_not_a_power_of_two_is_refused_by_name() {
    let mut options = RingOptions::new("lo");
    options.block_size = 3000;
    let e = RingSource::open(&options).unwrap_err().to_string();
    assert!(
        e.contains("ring block size") && e.contains("power of two"),
        "{e}"
    );
}
