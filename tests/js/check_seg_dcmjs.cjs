// Parse a pulmo SEG with dcmjs (the parser OHIF uses), unpack every frame's bits and compare them
// with the phantom's truth label volume (truth/*.nii.gz, read here with node's zlib).
// Usage: NODE_PATH=build/node/node_modules node check_seg_dcmjs.cjs SEG TRUTH_NII
const fs = require("fs");
const zlib = require("zlib");
const dcmjs = require("dcmjs");

const [segPath, truthPath] = process.argv.slice(2);
const buf = fs.readFileSync(segPath);
const data = dcmjs.data.DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(data.dict);

const nii = zlib.gunzipSync(fs.readFileSync(truthPath));
const dims = [nii.readInt16LE(42), nii.readInt16LE(44), nii.readInt16LE(46)]; // x, y, z
const srowZ = [nii.readFloatLE(312), nii.readFloatLE(316), nii.readFloatLE(320), nii.readFloatLE(324)];
const truth = nii.subarray(352);
const [nx, ny, nz] = dims;
const rows = ds.Rows, cols = ds.Columns;
if (rows !== ny || cols !== nx) throw new Error(`SEG ${cols}x${rows}, truth ${nx}x${ny}`);
const frames = Number(ds.NumberOfFrames);
const pixel = new Uint8Array(Array.isArray(ds.PixelData) ? ds.PixelData[0] : ds.PixelData);
const perFrame = ds.PerFrameFunctionalGroupsSequence;
const first = (x) => (Array.isArray(x) ? x[0] : x);
const plane = rows * cols;
let wrong = 0, set = 0;
const seen = new Set();
for (let f = 0; f < frames; f++) {
  const pf = perFrame[f];
  const segNo = first(pf.SegmentIdentificationSequence).ReferencedSegmentNumber;
  const ipp = first(pf.PlanePositionSequence).ImagePositionPatient.map(Number);
  const k = Math.round((ipp[2] - srowZ[3]) / srowZ[2]);
  if (k < 0 || k >= nz) throw new Error(`frame ${f} at z ${ipp[2]} is outside the volume`);
  seen.add(`${segNo}/${k}`);
  for (let i = 0; i < plane; i++) {
    const bit = f * plane + i;
    const on = (pixel[bit >> 3] >> (bit & 7)) & 1;
    const expected = truth[k * plane + i] === segNo ? 1 : 0;
    if (on !== expected) wrong++;
    set += on;
  }
}
// Every (segment, slice) that holds voxels must have a frame.
let missing = 0;
for (let k = 0; k < nz; k++) {
  const present = new Set();
  for (let i = 0; i < plane; i++) if (truth[k * plane + i]) present.add(truth[k * plane + i]);
  for (const v of present) if (!seen.has(`${v}/${k}`)) missing++;
}
if (wrong || missing) {
  console.log(`${wrong} bits differ, ${missing} (segment, slice) frames missing`);
  process.exit(1);
}
console.log(`ok dcmjs: ${frames} frames, ${set} bits set`);
