// A tiny Node.js service that uses a Tooken token the way Tooken's guide shows: from the
// environment, as process.env.TOOKEN_TOKEN. Under Vault Agent's process supervisor
// (agent-exec.hcl) the variable always holds a live token: Agent restarts the process with a new
// one before the old one's lease ends. Started by anything else, it reads the token from the file
// TOOKEN_TOKEN_FILE names instead, if set (agent-file.hcl renders it), again before every call,
// since Agent replaces the file's contents and nothing tells the process.
//
// Every TOOKEN_CHECK_INTERVAL seconds (default 60) it asks Tooken which token it holds
// (GET /tokens/self) and logs the token's id, never its secret.
"use strict";
const fs = require("node:fs");

const baseURL = process.env.TOOKEN_URL || "https://api.tooken.io/v1";
const interval = Number(process.env.TOOKEN_CHECK_INTERVAL || 60) * 1000;

function token() {
  const file = process.env.TOOKEN_TOKEN_FILE;
  return file ? fs.readFileSync(file, "utf8").trim() : process.env.TOOKEN_TOKEN;
}

async function check() {
  try {
    const res = await fetch(`${baseURL}/tokens/self`, {
      headers: { Authorization: `Bearer ${token()}` },
    });
    if (!res.ok) {
      console.log(`tooken-app[node]: GET /tokens/self answered ${res.status}`);
      return;
    }
    const self = await res.json();
    console.log(`tooken-app[node]: token ${self.id} works, expires ${self.expires_at}`);
  } catch (err) {
    console.log(`tooken-app[node]: calling Tooken failed: ${err.message}`);
  }
}

if (!process.env.TOOKEN_TOKEN && !process.env.TOOKEN_TOKEN_FILE) {
  console.error("tooken-app[node]: TOOKEN_TOKEN is not set");
  process.exit(1);
}
console.log(`tooken-app[node]: started, pid ${process.pid}`);
process.on("SIGTERM", () => {
  console.log(`tooken-app[node]: stopping, pid ${process.pid}`);
  process.exit(0);
});
check();
setInterval(check, interval);
