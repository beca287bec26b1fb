//! RLE Lossless encoding (PS3.5 Annex G).
//!
//! Written by hand because dicom-rs 0.10 decodes RLE but has no encoder. Each frame is a 64-byte
//! header followed by one PackBits segment per byte plane, most significant plane first; runs
//! never cross a row, and every segment is padded to an even length.

/// Encode one frame of `rows × cols` samples of `bytes_per_sample` bytes (little endian in
/// `frame`), single sample per pixel.
pub fn encode_frame(frame: &[u8], rows: usize, cols: usize, bytes_per_sample: usize) -> Vec<u8> {
    let planes = bytes_per_sample;
    let mut segments: Vec<Vec<u8>> = Vec::with_capacity(planes);
    let mut plane = vec![0u8; cols];
    for s in 0..planes {
        // Segment 1 is the most significant byte.
        let byte = planes - 1 - s;
        let mut seg = Vec::new();
        for r in 0..rows {
            for (c, out) in plane.iter_mut().enumerate() {
                *out = frame[(r * cols + c) * bytes_per_sample + byte];
            }
            packbits(&plane, &mut seg);
        }
        if seg.len() % 2 == 1 {
            seg.push(0);
        }
        segments.push(seg);
    }
    let mut out = Vec::with_capacity(64 + segments.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(planes as u32).to_le_bytes());
    let mut offset = 64u32;
    let mut offsets = [0u32; 15];
    for (o, seg) in offsets.iter_mut().zip(&segments) {
        *o = offset;
        offset += seg.len() as u32;
    }
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    for seg in segments {
        out.extend_from_slice(&seg);
    }
    out
}

/// PackBits one row: literal runs `n` (0..=127) then n+1 bytes; replicate runs `-n` (−1..=−127)
/// then one byte repeated n+1 times.
fn packbits(row: &[u8], out: &mut Vec<u8>) {
    let n = row.len();
    let mut i = 0;
    while i < n {
        let mut run = 1;
        while i + run < n && run < 128 && row[i + run] == row[i] {
            run += 1;
        }
        if run >= 2 {
            out.push((-(run as i32 - 1)) as i8 as u8);
            out.push(row[i]);
            i += run;
            continue;
        }
        // Literal: until the next run of at least 3 equal bytes (2 would not pay), max 128.
        let start = i;
        while i < n && i - start < 128 {
            if i + 2 < n && row[i] == row[i + 1] && row[i] == row[i + 2] {
                break;
            }
            i += 1;
        }
        let len = i - start;
        out.push((len - 1) as u8);
        out.extend_from_slice(&row[start..i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack(seg: &[u8], expected: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < expected {
            let h = seg[i] as i8;
            i += 1;
            if h >= 0 {
                let l = h as usize + 1;
                out.extend_from_slice(&seg[i..i + l]);
                i += l;
            } else if h != -128 {
                let l = (-(h as i32)) as usize + 1;
                out.extend(std::iter::repeat_n(seg[i], l));
                i += 1;
            }
        }
        out
    }

    #[test]
    fn packbits_round_trips() {
        let row: Vec<u8> = (0..300)
            .map(|i| {
                if (40..200).contains(&i) {
                    7
                } else {
                    (i * 31 % 251) as u8
                }
            })
            .collect();
        let mut seg = Vec::new();
        packbits(&row, &mut seg);
        assert!(seg.len() < row.len());
        assert_eq!(unpack(&seg, row.len()), row);
    }

    #[test]
    fn frame_header_and_planes() {
        let px: Vec<u16> = vec![0x0102, 0x0102, 0x0304, 0x0506];
        let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f = encode_frame(&bytes, 2, 2, 2);
        assert_eq!(u32::from_le_bytes([f[0], f[1], f[2], f[3]]), 2);
        let o1 = u32::from_le_bytes([f[4], f[5], f[6], f[7]]) as usize;
        let o2 = u32::from_le_bytes([f[8], f[9], f[10], f[11]]) as usize;
        assert_eq!(o1, 64);
        assert_eq!(o2 % 2, 0);
        assert_eq!(unpack(&f[o1..o2], 4), vec![1, 1, 3, 5]);
        assert_eq!(unpack(&f[o2..], 4), vec![2, 2, 4, 6]);
        assert_eq!(f.len() % 2, 0);
    }
}
