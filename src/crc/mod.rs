//! CRC32C (Castagnoli), and the CRC of two pieces joined, from theirs.
//!
//! A write needs the CRC of every chunk and of the whole block. Two passes over the
//! data cost twice one; instead the whole is built from the chunks' CRCs: the CRC of
//! `a ‖ b` is the CRC of `a` multiplied by `x^(8·len(b))` modulo the polynomial, plus
//! the CRC of `b` (the initial and final inversions of CRC32C cancel out). The
//! multiplication by a fixed power is a linear map of 32 bits, kept as eight 16-entry
//! tables per chunk size: eight lookups instead of the ~12 µs a general combine costs.

/// A value made on first use and kept for the life of the process, which never
/// makes a caller wait: two threads arriving first may both make it (one is kept).
/// A `OnceLock` makes the second wait for the first, and a child forked while a
/// thread of its parent was making the value waits for ever for a thread it does
/// not have.
pub(crate) type Made<T> = once_cell::race::OnceBox<T>;

#[cfg(target_arch = "x86_64")]
mod vpclmul;

/// The polynomial in the CRC's bit order (bit 31 is the coefficient of `x^0`).
const POLY: u32 = 0x82F6_3B78;
/// `x^0` in that order.
const ONE: u32 = 1 << 31;

/// The CRC32C (as iSCSI, ext4 and S3's `x-amz-checksum-crc32c`) of `data`, by the
/// faster of two crates on this CPU (see [`Engine`]).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    match engine() {
        Engine::Folding => crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32,
        Engine::Instruction => crc32c::crc32c(data),
        #[cfg(target_arch = "x86_64")]
        Engine::Wide => vpclmul::append(0, data),
    }
}

/// A CRC32C taken piece by piece, as bytes arrive (by the same engine).
pub(crate) struct Running(Partial);

enum Partial {
    Folding(Box<crc_fast::Digest>),
    Instruction(u32),
    #[cfg(target_arch = "x86_64")]
    Wide(u32),
}

impl Running {
    /// The CRC of nothing yet.
    pub(crate) fn new() -> Running {
        Running::by(engine())
    }

    /// The CRC of nothing yet, by `engine`.
    fn by(engine: Engine) -> Running {
        Running(match engine {
            Engine::Folding => Partial::Folding(Box::new(crc_fast::Digest::new(
                crc_fast::CrcAlgorithm::Crc32Iscsi,
            ))),
            Engine::Instruction => Partial::Instruction(0),
            #[cfg(target_arch = "x86_64")]
            Engine::Wide => Partial::Wide(0),
        })
    }

    /// Takes in the next `piece`.
    pub(crate) fn update(&mut self, piece: &[u8]) {
        match &mut self.0 {
            Partial::Folding(digest) => digest.update(piece),
            Partial::Instruction(crc) => *crc = crc32c::crc32c_append(*crc, piece),
            #[cfg(target_arch = "x86_64")]
            Partial::Wide(crc) => *crc = vpclmul::append(*crc, piece),
        }
    }

    /// The CRC32C of everything taken in.
    pub(crate) fn value(&self) -> u32 {
        match &self.0 {
            Partial::Folding(digest) => digest.finalize() as u32,
            Partial::Instruction(crc) | Partial::Wide(crc) => *crc,
        }
    }
}

/// What computes CRC32C.
///
/// `crc-fast` folds 64 bytes at a time with carry-less multiplication: with AVX-512
/// and VPCLMULQDQ it runs at about 57 GB/s on a Zen 4, and on ARM it blends PMULL
/// with the CRC instructions. Without AVX-512 its x86-64 path folds 16 bytes at a
/// time and lost to `crc32c`'s three interleaved SSE4.2 `crc32` streams on the same
/// Zen 4 with AVX-512 hidden by its hypervisor: 12.3 against 14.6 GB/s on 4 MiB,
/// 10.1 against 12.2 GB/s on an 8 KiB chunk. Where that CPU still has 256-bit
/// VPCLMULQDQ (AVX2), our own fold ([`vpclmul`]) beats both: 18–21 GB/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    /// `crc-fast`.
    Folding,
    /// `crc32c`.
    Instruction,
    /// 256-bit VPCLMULQDQ folding, ours.
    #[cfg(target_arch = "x86_64")]
    Wide,
}

/// The engine for this CPU, decided once (see [`Made`] for why without `OnceLock`).
pub(crate) fn engine() -> Engine {
    static ENGINE: Made<Engine> = Made::new();
    *ENGINE.get_or_init(|| Box::new(pick()))
}

/// The engine for this CPU.
fn pick() -> Engine {
    #[cfg(target_arch = "x86_64")]
    {
        let wide = std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("vpclmulqdq");
        if !wide && vpclmul::available() {
            return Engine::Wide;
        }
        if !wide && std::arch::is_x86_feature_detected!("sse4.2") {
            return Engine::Instruction;
        }
    }
    Engine::Folding
}

/// `a · b` modulo the polynomial.
fn multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    for power in 0..32 {
        if a & (ONE >> power) != 0 {
            product ^= b;
        }
        // b · x
        b = if b & 1 == 1 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

/// `x^n` modulo the polynomial.
fn x_power(n: u64) -> u32 {
    let mut result = ONE;
    // x^1, then squared for each bit of n.
    let mut square = ONE >> 1;
    let mut n = n;
    while n > 0 {
        if n & 1 == 1 {
            result = multiply(result, square);
        }
        square = multiply(square, square);
        n >>= 1;
    }
    result
}

/// `x^(8·len)` modulo the polynomial: what a CRC is multiplied by when `len` bytes
/// are appended to its data.
fn power_for(len: u64) -> u32 {
    x_power(8 * len)
}

/// The CRC of `a ‖ b` from `crc(a)`, `crc(b)` and `len(b)`.
pub(crate) fn join(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    multiply(power_for(len_b), crc_a) ^ crc_b
}

/// Multiplication by `x^(8·len)` for one fixed `len`, by table.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    len: u64,
    tables: [[u32; 16]; 8],
}

impl Appender {
    fn new(len: u64) -> Appender {
        let power = power_for(len);
        let bits: Vec<u32> = (0..32).map(|bit| multiply(power, 1 << bit)).collect();
        let mut tables = [[0u32; 16]; 8];
        for (nibble, table) in tables.iter_mut().enumerate() {
            for (value, entry) in table.iter_mut().enumerate() {
                *entry = (0..4)
                    .filter(|b| value >> b & 1 == 1)
                    .fold(0, |acc, b| acc ^ bits[nibble * 4 + b]);
            }
        }
        Appender { len, tables }
    }

    /// The appender for pieces of `len` bytes, a power of two from 1 KiB to 1 MiB (made
    /// once per process); others are built on the spot.
    pub(crate) fn for_len(len: u64) -> std::borrow::Cow<'static, Appender> {
        static MADE: [Made<Appender>; 11] = [const { Made::new() }; 11];
        let slot = len.trailing_zeros().wrapping_sub(10) as usize;
        match MADE.get(slot) {
            Some(made) if len.is_power_of_two() => {
                std::borrow::Cow::Borrowed(made.get_or_init(|| Box::new(Appender::new(len))))
            }
            _ => std::borrow::Cow::Owned(Appender::new(len)),
        }
    }

    /// The CRC of `a ‖ b` from `crc(a)` and `crc(b)`, where `b` is `len` bytes long.
    pub(crate) fn join(&self, crc_a: u32, crc_b: u32) -> u32 {
        let shifted = self
            .tables
            .iter()
            .enumerate()
            .fold(0, |acc, (nibble, table)| {
                acc ^ table[(crc_a >> (4 * nibble) & 15) as usize]
            });
        shifted ^ crc_b
    }

    /// The length of the pieces this appender joins.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + seed + i / 97) as u8).collect()
    }

    /// Every engine this CPU can run.
    fn engines() -> Vec<Engine> {
        let mut all = vec![Engine::Folding, Engine::Instruction];
        #[cfg(target_arch = "x86_64")]
        if vpclmul::available() {
            all.push(Engine::Wide);
        }
        all
    }

    fn crc_by(engine: Engine, data: &[u8]) -> u32 {
        let mut running = Running::by(engine);
        running.update(data);
        running.value()
    }

    #[test]
    fn every_engine_agrees_on_every_length_and_alignment() {
        // Lengths around the wide fold's edges: under 256 bytes, whole and partial
        // 128-byte rounds, and long runs; every start within a 32-byte load.
        let data = bytes(70_000, 9);
        let lengths = (0..1200).chain([4095, 4096, 8192, 8193, 65_536, 69_960]);
        for len in lengths {
            for start in 0..33 {
                let piece = &data[start..start + len];
                let folded = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, piece) as u32;
                for engine in engines() {
                    assert_eq!(
                        crc_by(engine, piece),
                        folded,
                        "{engine:?}: {len} bytes at {start}"
                    );
                }
                assert_eq!(super::crc32c(piece), folded);
            }
        }
        // Every single-bit change of a long input changes the wide fold's answer as
        // it changes the reference's (the fold's constants are right for every lane).
        let mut flipped = bytes(1024, 4);
        for bit in 0..flipped.len() * 8 {
            flipped[bit / 8] ^= 1 << (bit % 8);
            for engine in engines() {
                assert_eq!(
                    crc_by(engine, &flipped),
                    crc32c::crc32c(&flipped),
                    "{engine:?}: bit {bit}"
                );
            }
            flipped[bit / 8] ^= 1 << (bit % 8);
        }
    }

    #[test]
    fn the_wide_fold_is_used_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        if vpclmul::available() && !std::arch::is_x86_feature_detected!("avx512vl") {
            assert_eq!(engine(), Engine::Wide);
        }
        assert!(engines().contains(&engine()));
    }

    #[test]
    fn a_running_crc_is_the_crc_of_its_pieces_joined() {
        let data = bytes(300_000, 5);
        let cuts = [
            vec![],
            vec![1],
            vec![7, 16_384, 16_391],
            vec![65_536, 299_999],
        ];
        for (engine, cuts) in engines()
            .into_iter()
            .flat_map(|e| cuts.iter().map(move |c| (e, c.clone())))
        {
            let mut running = Running::by(engine);
            let mut from = 0;
            for to in cuts.into_iter().chain([data.len()]) {
                running.update(&data[from..to]);
                from = to;
            }
            assert_eq!(running.value(), crc32c(&data), "{engine:?}");
        }
        assert_eq!(Running::new().value(), crc32c(b""));
    }

    #[test]
    fn joined_crcs_are_the_crc_of_the_joined_data() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        for (a, b) in [
            (0, 0),
            (0, 5),
            (5, 0),
            (1, 1),
            (100, 4096),
            (8192, 8192),
            (3, 70_001),
        ] {
            let (x, y) = (bytes(a, 1), bytes(b, 2));
            let whole = crc32c(&[x.as_slice(), y.as_slice()].concat());
            assert_eq!(join(crc32c(&x), crc32c(&y), b as u64), whole, "{a} + {b}");
        }
    }

    #[test]
    fn tables_join_as_the_direct_product() {
        for len in [4096u64, 8192, 65_536, 1 << 20, 1000] {
            let appender = Appender::for_len(len);
            assert_eq!(appender.len(), len);
            let (x, y) = (bytes(12_345, 3), bytes(len as usize, 4));
            let whole = crc32c(&[x.as_slice(), y.as_slice()].concat());
            assert_eq!(appender.join(crc32c(&x), crc32c(&y)), whole, "{len}");
        }
    }
}
