//! Capture filters: classic BPF programs the kernel runs on every frame before the agent sees
//! it, so what the agent never looks at costs no copy.
//!
//! The default keeps TCP and UDP over IPv4 and IPv6, ARP (for network-level detection; not
//! when that is off), and every frame that still carries an 802.1Q or QinQ tag, which the agent
//! unwraps itself; spanning tree, LLDP and the like are dropped in the kernel. Any other filter is given as `tcpdump -ddd` prints it, so an
//! operator writes it in tcpdump's language without the agent linking libpcap:
//!
//! ```text
//! tcpdump -ddd 'vlan 10 and host 10.1.1.5' | paste -sd, -
//! ```

use std::fmt;

pub mod interpret;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// A filter program the kernel accepts: 1 to 4096 instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program(Vec<Instruction>);

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The text is not `tcpdump -ddd` output.
    #[error(
        "filter: {0} (expected \"tcp-or-udp\", \"tcp-udp-or-arp\", \"all\", or the output of `tcpdump -ddd EXPRESSION`: a count, then one \"code jt jf k\" per instruction, separated by commas or new lines)"
    )]
    Syntax(String),
}

/// Accept: the whole frame.
const ACCEPT: u32 = 0x0004_0000;

const LD_ABS: u16 = 0x20;
const LDH_ABS: u16 = 0x28;
const LDB_ABS: u16 = 0x30;
const JEQ_K: u16 = 0x15;
const JA: u16 = 0x05;
const TAX: u16 = 0x07;
const XOR_X: u16 = 0xac;
const RSH_K: u16 = 0x74;
const MOD_K: u16 = 0x94;
const RET_K: u16 = 0x06;
const RET_A: u16 = 0x16;
/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: a load there reads the packet's EtherType from metadata.
const AD_PROTOCOL: u32 = 0xffff_f000;
/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: the packet type (`PACKET_HOST`, `PACKET_OUTGOING`, ...).
const AD_PKTTYPE: u32 = 0xffff_f004;
/// `PACKET_OUTGOING`: a frame this host sends.
const OUTGOING: u32 = 4;
const LDX_IMM: u16 = 0x01;
const LD_IND: u16 = 0x40;
const ST: u16 = 0x02;
const LDX_MEM: u16 = 0x61;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

impl Program {
    /// TCP or UDP over IPv4 or IPv6 (IPv6 fragments too), and any frame still tagged 802.1Q
    /// or 802.1ad.
    pub fn tcp_or_udp() -> Self {
        Self(vec![
            op(LDH_ABS, 0, 0, 12),    // 0: ethertype
            op(JEQ_K, 5, 0, 0x0800),  // 1: IPv4 -> 7
            op(JEQ_K, 7, 0, 0x86dd),  // 2: IPv6 -> 10
            op(JEQ_K, 11, 0, 0x8100), // 3: 802.1Q -> accept
            op(JEQ_K, 10, 0, 0x88a8), // 4: 802.1ad -> accept
            op(JEQ_K, 9, 0, 0x9100),  // 5: old QinQ -> accept
            op(RET_K, 0, 0, 0),       // 6: drop
            op(LDB_ABS, 0, 0, 23),    // 7: IPv4 protocol
            op(JEQ_K, 6, 0, 6),       // 8: TCP -> accept
            op(JEQ_K, 5, 4, 17),      // 9: UDP -> accept, else drop
            op(LDB_ABS, 0, 0, 20),    // 10: IPv6 next header
            op(JEQ_K, 3, 0, 6),       // 11: TCP -> accept
            op(JEQ_K, 2, 0, 17),      // 12: UDP -> accept
            op(JEQ_K, 1, 0, 44),      // 13: fragment header -> accept
            op(RET_K, 0, 0, 0),       // 14: drop
            op(RET_K, 0, 0, ACCEPT),  // 15: accept
        ])
    }

    /// [`Program::tcp_or_udp`] and ARP: the default when network-level detection is on (ARP
    /// spoofing is told from ARP packets).
    pub fn tcp_udp_or_arp() -> Self {
        Self(vec![
            op(LDH_ABS, 0, 0, 12),    // 0: ethertype
            op(JEQ_K, 6, 0, 0x0800),  // 1: IPv4 -> 8
            op(JEQ_K, 8, 0, 0x86dd),  // 2: IPv6 -> 11
            op(JEQ_K, 12, 0, 0x8100), // 3: 802.1Q -> accept
            op(JEQ_K, 11, 0, 0x88a8), // 4: 802.1ad -> accept
            op(JEQ_K, 10, 0, 0x9100), // 5: old QinQ -> accept
            op(JEQ_K, 9, 0, 0x0806),  // 6: ARP -> accept
            op(RET_K, 0, 0, 0),       // 7: drop
            op(LDB_ABS, 0, 0, 23),    // 8: IPv4 protocol
            op(JEQ_K, 6, 0, 6),       // 9: TCP -> accept
            op(JEQ_K, 5, 4, 17),      // 10: UDP -> accept, else drop
            op(LDB_ABS, 0, 0, 20),    // 11: IPv6 next header
            op(JEQ_K, 3, 0, 6),       // 12: TCP -> accept
            op(JEQ_K, 2, 0, 17),      // 13: UDP -> accept
            op(JEQ_K, 1, 0, 44),      // 14: fragment header -> accept
            op(RET_K, 0, 0, 0),       // 15: drop
            op(RET_K, 0, 0, ACCEPT),  // 16: accept
        ])
    }

    /// Whether this program keeps an ARP request on an untagged Ethernet segment (run in
    /// [`interpret`], as the kernel would): `None` when it uses an instruction the
    /// interpreter does not know, so nobody can say.
    pub fn keeps_arp(&self) -> Option<bool> {
        interpret::run(self, &interpret::ARP_REQUEST, 0, 0).map(|kept| kept > 0)
    }

    /// A fanout selector for `workers` sockets: the index of the socket a frame goes to, from
    /// its IP addresses XORed together (IPv4; the low 32 bits of each IPv6 address), so both
    /// directions of every conversation between two hosts go to the same worker, and with
    /// them every detector's state for that pair. Frames without IP go to worker 0.
    ///
    /// The kernel runs a fanout program on a received frame from its network header on (the
    /// link header is consumed), but on a frame this host sends from its link header: the
    /// program reads the packet type (`SKF_AD_PKTTYPE`) to know where the IP header starts,
    /// and the EtherType from the metadata (`SKF_AD_PROTOCOL`, VLAN tags already off).
    pub fn fanout_by_host_pair(workers: u32) -> Self {
        let n = workers.max(1);
        Self(vec![
            op(LD_ABS, 0, 0, AD_PKTTYPE),   // 0: packet type
            op(JEQ_K, 0, 2, OUTGOING),      // 1: sent by this host -> 2, else 4
            op(LDX_IMM, 0, 0, 14),          // 2: x = 14: the IP header follows Ethernet
            op(JA, 0, 0, 1),                // 3: -> 5
            op(LDX_IMM, 0, 0, 0),           // 4: x = 0: the IP header comes first
            op(LDH_ABS, 0, 0, AD_PROTOCOL), // 5: EtherType (metadata)
            op(JEQ_K, 2, 0, 0x0800),        // 6: IPv4 -> 9
            op(JEQ_K, 5, 0, 0x86dd),        // 7: IPv6 -> 13
            op(RET_K, 0, 0, 0),             // 8: worker 0
            op(LD_IND, 0, 0, 12),           // 9: IPv4 source
            op(ST, 0, 0, 0),                // 10: M[0] = source
            op(LD_IND, 0, 0, 16),           // 11: IPv4 destination
            op(JA, 0, 0, 3),                // 12: -> 16
            op(LD_IND, 0, 0, 20),           // 13: IPv6 source, low 32 bits
            op(ST, 0, 0, 0),                // 14: M[0] = source
            op(LD_IND, 0, 0, 36),           // 15: IPv6 destination, low 32 bits
            op(LDX_MEM, 0, 0, 0),           // 16: x = source
            op(XOR_X, 0, 0, 0),             // 17: a = source ^ destination
            op(TAX, 0, 0, 0),               // 18: x = a
            op(RSH_K, 0, 0, 16),            // 19: a >>= 16
            op(XOR_X, 0, 0, 0),             // 20: fold the high half in
            op(MOD_K, 0, 0, n),             // 21: a %= workers
            op(RET_A, 0, 0, 0),             // 22: worker a
        ])
    }

    /// Every frame.
    pub fn everything() -> Self {
        Self(vec![op(RET_K, 0, 0, ACCEPT)])
    }

    /// The filter a configuration names: `tcp-or-udp`, `tcp-udp-or-arp`, `all`, or a program
    /// as `tcpdump -ddd` prints it.
    pub fn from_setting(setting: &str) -> Result<Self, FilterError> {
        match setting.trim() {
            "tcp-or-udp" => Ok(Self::tcp_or_udp()),
            "tcp-udp-or-arp" => Ok(Self::tcp_udp_or_arp()),
            "all" => Ok(Self::everything()),
            program => Self::parse(program),
        }
    }

    /// Parses `tcpdump -ddd` output: the instruction count, then `code jt jf k` per instruction,
    /// separated by new lines or commas.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parts = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let count: usize = parts
            .next()
            .ok_or_else(|| FilterError::Syntax("empty".into()))?
            .parse()
            .map_err(|_| FilterError::Syntax("the first number is not a count".into()))?;
        if !(1..=4096).contains(&count) {
            return Err(FilterError::Syntax(format!(
                "{count} instructions (the kernel takes 1 to 4096)"
            )));
        }
        let mut program = Vec::with_capacity(count);
        for (i, part) in parts.enumerate() {
            let fields: Vec<&str> = part.split_whitespace().collect();
            let bad = || FilterError::Syntax(format!("instruction {}: {part:?}", i + 1));
            let [code, jt, jf, k] = fields[..] else {
                return Err(bad());
            };
            program.push(Instruction {
                code: code.parse().map_err(|_| bad())?,
                jt: jt.parse().map_err(|_| bad())?,
                jf: jf.parse().map_err(|_| bad())?,
                k: k.parse().map_err(|_| bad())?,
            });
        }
        if program.len() != count {
            return Err(FilterError::Syntax(format!(
                "{} instructions where the count says {count}",
                program.len()
            )));
        }
        Ok(Self(program))
    }

    /// The instructions.
    pub fn instructions(&self) -> &[Instruction] {
        &self.0
    }

    /// The program as the kernel takes it.
    #[cfg(target_os = "linux")]
    pub fn to_kernel(&self) -> Vec<libc::sock_filter> {
        self.0
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    }
}

impl fmt::Display for Program {
    /// `tcpdump -ddd` form, on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.len())?;
        for i in &self.0 {
            write!(f, ",{} {} {} {}", i.code, i.jt, i.jf, i.k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
