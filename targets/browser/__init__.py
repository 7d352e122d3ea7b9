"""The browser target: the portable core in a Pyodide Web Worker, persisted in IndexedDB.

- ``targets.browser.platform``: the in-process platform, told by the page what a tab cannot
  find out (the link, a stable fingerprint);
- ``targets.browser.host``: the worker's loop around ``Runtime.tick(now)``, and the rule that
  nothing is told to the page before it is persisted;
- ``targets.browser.calls``: the methods of ``window.edgeMin``;
- ``targets.browser.transport``: sync with central over synchronous XHR, what
  ``configure`` stores, and the core's AES-GCM on WebCrypto through JSPI.

The page, the loader and the worker script are in ``wasm/web/``; ``make web`` bundles them
with Pyodide and the wheels into ``dist/web/`` (``wasm/build_web.py``).
"""
