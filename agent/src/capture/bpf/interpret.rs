//! A classic BPF interpreter for the instructions `tcpdump -ddd` and our own programs use, as
//! the kernel runs them (a load beyond the frame drops it): to tell an operator at start what
//! a filter of theirs will do (drop ARP, say), and to test our programs without a kernel.

use super::Program;

/// An ARP request (who has 10.0.0.9, tell 10.0.0.1) on an untagged Ethernet segment.
pub const ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, // Ethernet
    0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
    0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1, // sender
    0, 0, 0, 0, 0, 0, 10, 0, 0, 9, // target
];

/// Runs `program` on `frame`: the bytes kept, 0 for a drop, `None` for an instruction it does
/// not know. `protocol` and `pkttype` are what the metadata loads read (`SKF_AD_PROTOCOL`,
/// `SKF_AD_PKTTYPE`): how the kernel runs fanout selectors (on a received packet from its
/// network header on, on a sent one from its link header).
pub fn run(program: &Program, frame: &[u8], protocol: u16, pkttype: u32) -> Option<u32> {
    let mut mem = [0u32; 16];
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut pc = 0usize;
    let load = |at: u32, size: usize| -> Option<u32> {
        let at = at as usize;
        let bytes = frame.get(at..at + size)?;
        Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
    };
    macro_rules! load_or_drop {
        ($at:expr, $size:expr) => {
            match load($at, $size) {
                Some(v) => v,
                None => return Some(0),
            }
        };
    }
    for _ in 0..program.0.len() * 4 {
        let ins = *program.0.get(pc)?;
        pc += 1;
        let jump = |cond: bool| if cond { ins.jt } else { ins.jf } as usize;
        match ins.code {
            0x20 if ins.k == 0xffff_f004 => a = pkttype, // ld #type
            0x20 => a = load_or_drop!(ins.k, 4),         // ld [k]
            0x28 if ins.k == 0xffff_f000 => a = u32::from(protocol), // ldh #proto
            0x28 => a = load_or_drop!(ins.k, 2),         // ldh [k]
            0x30 => a = load_or_drop!(ins.k, 1),         // ldb [k]
            0x48 => a = load_or_drop!(ins.k.wrapping_add(x), 2), // ldh [x+k]
            0x50 => a = load_or_drop!(ins.k.wrapping_add(x), 1), // ldb [x+k]
            0xb1 => x = 4 * (load_or_drop!(ins.k, 1) & 0xf), // ldxb 4*([k]&0xf)
            0x15 => pc += jump(a == ins.k),              // jeq #k
            0x25 => pc += jump(a > ins.k),               // jgt #k
            0x35 => pc += jump(a >= ins.k),              // jge #k
            0x45 => pc += jump(a & ins.k != 0),          // jset #k
            0x54 => a &= ins.k,                          // and #k
            0x01 => x = ins.k,                           // ldx #k
            0x40 => a = load_or_drop!(ins.k.wrapping_add(x), 4), // ld [x+k]
            0x02 => *mem.get_mut(ins.k as usize)? = a,   // st M[k]
            0x61 => x = *mem.get(ins.k as usize)?,       // ldx M[k]
            0x07 => x = a,                               // tax
            0xac => a ^= x,                              // xor x
            0x74 => a = a.checked_shr(ins.k)?,           // rsh #k (32 or more: unknown)
            0x94 => a = a.checked_rem(ins.k)?,           // mod #k
            0x05 => pc += ins.k as usize,                // ja
            0x06 => return Some(ins.k),                  // ret #k
            0x16 => return Some(a),                      // ret a
            _ => return None,
        }
    }
    None
}
