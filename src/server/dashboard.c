/* The dashboard page at GET /: placeholder until the page lands. */
#include "server/server.h"

const char *srv_dashboard_html(void) {
    return "<!doctype html><html><head><meta charset=\"utf-8\"><title>kvslim</title></head>"
           "<body><h1>kvslim serve</h1><p>See <a href=\"/metrics\">/metrics</a>.</p></body></html>\n";
}
