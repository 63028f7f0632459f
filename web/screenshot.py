#!/usr/bin/env python3
"""Draws docs/web-page.png, the README's picture of the page: opens URL (a `wgtrain web`
page with ?…&autorun=1) in headless Chromium on SwiftShader, waits until the page has put
its summary in #summary, and captures the window. Needs `pip install websocket-client`.
    web/screenshot.py URL OUT.png"""
import base64, json, subprocess, sys, tempfile, time, urllib.request

import websocket

url, out = sys.argv[1], sys.argv[2]
profile = tempfile.mkdtemp()
browser = subprocess.Popen(
    ["chromium", "--headless=new", "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader",
     "--enable-unsafe-swiftshader", "--no-sandbox", "--hide-scrollbars", "--window-size=1000,1150",
     "--remote-debugging-port=9333", f"--user-data-dir={profile}", url],
    stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            pages = json.load(urllib.request.urlopen("http://127.0.0.1:9333/json"))
            page = next(p for p in pages if p["type"] == "page")
            break
        except Exception:
            time.sleep(0.2)
    ws = websocket.create_connection(page["webSocketDebuggerUrl"])
    calls = iter(range(1, 1 << 30))

    def call(method, **params):
        n = next(calls)
        ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("id") == n:
                return reply.get("result", {})

    while True:
        done = call("Runtime.evaluate", expression="document.getElementById('summary').textContent")
        if done.get("result", {}).get("value"):
            break
        time.sleep(1)
    shot = call("Page.captureScreenshot", format="png")
    open(out, "wb").write(base64.b64decode(shot["data"]))
finally:
    browser.kill()
