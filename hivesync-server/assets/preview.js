// The page a preview QR code opens: builds the bundle with the preview token from the URL's
// fragment (never sent to the server by the browser) and offers the zip for download. Everything
// is written as text, never as HTML.
"use strict";

const api = "/api/v1/preview";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
// Out of the address bar and the history once read.
if (token) history.replaceState(null, "", location.pathname);
const $ = (id) => document.getElementById(id);

function say(id, text) {
  $(id).textContent = text;
}

async function call(path, options = {}) {
  const headers = { authorization: "Bearer " + token };
  if (options.body) headers["content-type"] = "application/json";
  return fetch(api + path, { ...options, headers });
}

async function json(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((body.code || response.status) + ": " + (body.message || "refused"));
  }
  return body;
}

// What the app that opens the bundle must be: a different React Native minor, Expo SDK or native
// module version crashes it.
function describeRuntime(runtime) {
  if (!runtime) return "";
  const parts = [];
  if (runtime.react_native) parts.push("React Native " + runtime.react_native);
  if (runtime.expo_sdk) parts.push("Expo SDK " + runtime.expo_sdk);
  if (runtime.hermes_bytecode) parts.push("Hermes bytecode " + runtime.hermes_bytecode);
  const modules = Object.entries(runtime.native_modules || {}).map(([name, version]) => name + "@" + version);
  parts.push(modules.length ? "native modules: " + modules.join(", ") : "no native modules");
  return "Needs an app with " + parts.join("; ") + " (runtime " + runtime.fingerprint.slice(0, 12) + ")";
}

async function follow(job) {
  $("progress").hidden = false;
  for (;;) {
    const status = await json(await call("/status/" + job));
    $("progress").value = status.progress;
    say("phase", status.phase || status.status);
    if (status.status === "success") {
      say("runtime", [describeRuntime(status.runtime), ...(status.warnings || [])].join("\n"));
      const zip = await call("/download/" + job);
      if (!zip.ok) throw new Error("the download was refused (" + zip.status + ")");
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await zip.blob());
      link.download = "preview-" + job + ".zip";
      link.textContent = "Download the bundle (" + status.bytes + " bytes)";
      $("result").replaceChildren(link);
      return;
    }
    if (status.status === "failed" || status.status === "cancelled") {
      const error = status.error || {};
      say("result", (error.code || status.status) + ": " + (error.message || ""));
      const log = await call("/logs/" + job);
      if (log.ok) {
        $("log").hidden = false;
        say("log", await log.text());
      }
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function build() {
  $("build").disabled = true;
  try {
    const accepted = await json(await call("/build", { method: "POST", body: "{}" }));
    say("summary", "Build " + accepted.job_id + " of commit " + accepted.commit);
    await follow(accepted.job_id);
  } catch (error) {
    say("result", String(error.message || error));
  } finally {
    $("build").disabled = false;
  }
}

if (token && token.startsWith("v1.")) {
  say("summary", "Ready to build this project's preview.");
  $("build").disabled = false;
  $("build").addEventListener("click", build);
} else {
  say("summary", "This page needs a preview token: scan the QR code from `hivesync preview token`.");
}
