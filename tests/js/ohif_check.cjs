// OHIF v3 in headless Chromium, over Orthanc's DICOMweb: upload a study, open it, load the SEG of
// the given series, and print what the viewer holds (segment labels, voxel count and centroid per
// segment, read from cornerstone's segmentation state) as JSON on the last line of stdout.
//
// OHIF_THUMB_TEXT picks the thumbnail by its text (series description) instead of the series UID.
// With OHIF_MODE=sr, it opens the SR instead (the thumbnail whose text has OHIF_THUMB_TEXT) and
// prints the SR display set's measurements as OHIF parsed them (tracking identifier, whether it
// was placed on an image, labels) and the text drawn in the viewport.
//
// Usage (NODE_PATH=build/node/node_modules):
//   node ohif_check.cjs ORTHANC_URL OHIF_DIST STUDY_UID SEG_SERIES_UID SCREENSHOT FILE...
const fs = require("fs");
const http = require("http");
const path = require("path");
const { chromium } = require("playwright-core");

const [orthanc, dist, studyUid, segSeriesUid, screenshot, ...files] = process.argv.slice(2);
const log = (...a) => console.error("[ohif]", ...a);

async function upload() {
  for (const f of files) {
    const r = await fetch(`${orthanc}/instances`, { method: "POST", body: fs.readFileSync(f) });
    if (!r.ok) throw new Error(`upload ${f}: ${r.status} ${await r.text()}`);
  }
  log(`uploaded ${files.length} files`);
}

const appConfig = `window.config = {
  routerBasename: '/',
  extensions: [], modes: [], showStudyList: true, maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'orthanc',
  investigationalUseDialog: { option: 'never' },
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc', name: 'orthanc',
      wadoUriRoot: '/wado', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true,
      bulkDataURI: { enabled: true },
    },
  }],
};`;

const types = { ".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".wasm": "application/wasm",
  ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon" };

function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname.startsWith("/dicom-web") || url.pathname.startsWith("/wado")) {
      const target = new URL(orthanc + req.url);
      const p = http.request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      p.on("error", (e) => { res.writeHead(502); res.end(String(e)); });
      req.pipe(p);
      return;
    }
    if (url.pathname === "/app-config.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(appConfig);
      return;
    }
    let file = path.join(dist, decodeURIComponent(url.pathname));
    if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      file = path.join(dist, "index.html");
    }
    res.writeHead(200, { "content-type": types[path.extname(file)] || "application/octet-stream" });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

async function main() {
  await upload();
  const server = await serve();
  const port = server.address().port;
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--enable-unsafe-swiftshader"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (e) => log("page error:", e.message));
  try {
    await page.goto(`http://127.0.0.1:${port}/viewer?StudyInstanceUIDs=${studyUid}`);
    // Dismiss the tour if it shows.
    const skip = page.getByText("Skip all", { exact: false });
    try { await skip.first().click({ timeout: 15000 }); } catch (_) { log("no tour"); }
    // A double-click before the viewport grid holds an enabled element is lost ("ViewportId is
    // required ..."), which happens on a loaded machine: wait for the first viewport.
    const viewportReady = () => page.waitForFunction(() => {
      const cs = window.cornerstone;
      return cs && cs.getEnabledElements && cs.getEnabledElements().length > 0;
    }, null, { timeout: 300000, polling: 500 });
    await viewportReady();
    if (process.env.OHIF_MODE === "sr") {
      const thumb = page.locator('[data-cy^="study-browser-thumbnail"]', { hasText: process.env.OHIF_THUMB_TEXT || "SR" });
      const placed = () => {
        const ds = window.services && window.services.displaySetService;
        if (!ds) return null;
        const sr = ds.getActiveDisplaySets().find((d) => d.Modality === "SR");
        if (!sr || !sr.isLoaded || !sr.measurements) return null;
        const measurements = sr.measurements.map((m) => ({
          id: m.TrackingIdentifier, loaded: !!m.loaded,
          labels: (m.labels || []).map((l) => [l.label, String(l.value)]),
        }));
        // Placed on an image and drawn: the viewport shows the CT with the report's text.
        const viewport = document.querySelector('[data-cy="viewport-pane"]') || document.body;
        const text = viewport.innerText;
        if (!measurements.some((m) => m.loaded) || !/Volume/.test(text)) return null;
        return { measurements, text };
      };
      // Generous waits: the SR viewport first fetches every CT image from the PACS, and a slow
      // spell of this 2-core machine once made that take over two minutes (2026-12-02). Now and
      // then OHIF opens the SR and never places it (the CT's first image, no error; a fresh
      // clone, 2026-12-04, where the same study placed in 6 s on the next run): the viewer is
      // opened once more, as a reader would, and the SR must then be placed.
      let result;
      for (let attempt = 1; ; attempt++) {
        await thumb.first().dblclick({ timeout: 60000 });
        try {
          result = await page.waitForFunction(placed, null, { timeout: attempt === 1 ? 180000 : 300000, polling: 1000 });
          break;
        } catch (e) {
          if (attempt > 1) throw e;
          log("the SR was not placed in 3 minutes; opening the viewer again");
          await page.reload();
          await viewportReady();
        }
      }
      const value = await result.jsonValue();
      await page.waitForTimeout(1500);
      await page.screenshot({ path: screenshot });
      console.log(JSON.stringify(value));
      return;
    }
    // The SEG thumbnail: the one whose series is ours.
    const thumb = process.env.OHIF_THUMB_TEXT
      ? page.locator('[data-cy^="study-browser-thumbnail"]', { hasText: process.env.OHIF_THUMB_TEXT })
      : page.locator(`[data-series="${segSeriesUid}"], [data-cy="study-browser-thumbnail-${segSeriesUid}"]`);
    let found = (await thumb.count()) > 0;
    if (!found) {
      log("thumbnail by series UID not found; looking for SEG text");
    }
    const target = found ? thumb.first() : page.getByText("SEG", { exact: true }).first();
    await target.dblclick({ timeout: 60000 });
    try { await page.getByRole("button", { name: "Yes" }).click({ timeout: 20000 }); } catch (_) { log("no hydration prompt"); }
    // Wait until cornerstone holds the segmentation with its voxels.
    const result = await page.waitForFunction(() => {
      const ct = window.cornerstoneTools, cs = window.cornerstone;
      if (!ct || !cs) return null;
      const segs = ct.segmentation.state.getSegmentations();
      if (!segs || !segs.length) return null;
      const s = segs[0];
      const labels = Object.values(s.segments || {}).filter(Boolean).map((x) => [x.segmentIndex, x.label]);
      const rep = s.representationData && s.representationData.Labelmap;
      if (!rep) return null;
      // A stack labelmap (one image per source image) or a volume.
      let slices = [];
      if (rep.imageIds && rep.imageIds.length) {
        for (const id of rep.imageIds) {
          const img = cs.cache.getImage(id);
          if (!img) return null;
          slices.push({ data: img.getPixelData(), w: img.columns, h: img.rows, ref: img.referencedImageId });
        }
      } else if (rep.volumeId) {
        const vol = cs.cache.getVolume(rep.volumeId);
        if (!vol) return null;
        const [w, h, d] = vol.dimensions;
        const data = vol.voxelManager ? vol.voxelManager.getCompleteScalarDataArray() : vol.getScalarData();
        for (let k = 0; k < d; k++) slices.push({ data: data.subarray(k * w * h, (k + 1) * w * h), w, h });
      } else return null;
      const stats = {};
      slices.forEach((sl, k) => {
        let z = k;
        if (sl.ref) {
          const meta = cs.metaData.get("imagePlaneModule", sl.ref);
          if (meta) z = meta.imagePositionPatient[2];
        }
        for (let i = 0; i < sl.data.length; i++) {
          const v = sl.data[i];
          if (!v) continue;
          const st = stats[v] || (stats[v] = { count: 0, x: 0, y: 0, z: 0 });
          st.count++; st.x += i % sl.w; st.y += Math.floor(i / sl.w); st.z += z;
        }
      });
      const total = Object.values(stats).reduce((a, s) => a + s.count, 0);
      if (!total) return null;
      for (const st of Object.values(stats)) { st.x /= st.count; st.y /= st.count; st.z /= st.count; }
      return { labels, stats, slices: slices.length };
    }, null, { timeout: 300000, polling: 1000 });
    const value = await result.jsonValue();
    await page.waitForTimeout(1500);
    await page.screenshot({ path: screenshot });
    console.log(JSON.stringify(value));
  } catch (e) {
    await page.screenshot({ path: screenshot }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
