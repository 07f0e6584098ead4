"""The shared HTTP layer: one polite client (surd.http.client) and the rules it follows
(surd.http.rules). Every failure ends as a `FetchError` whose `reason` is stored with the item or
page (``http_404``, ``timeout``, ``blocked``, ``too_large``, ``robots_disallowed``, ...)."""
