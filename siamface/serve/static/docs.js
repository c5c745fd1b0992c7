// Swagger UI for /docs, from the swagger-ui-bundle package served by this server (no CDN, no inline script).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
});
