# Global external Application Load Balancer in front of the Cloud Run service:
# HTTPS with a Google-managed certificate, HTTP redirected to HTTPS, and a Cloud
# Armor policy on the backend.

resource "google_compute_global_address" "collector" {
  name = "${var.service_name}-ip"

  depends_on = [google_project_service.enabled]
}

# Google issues the certificate once the domain's A record points at the address
# above. Until then the certificate stays PROVISIONING. The name carries a hash of
# the domain, so a new domain gets a new certificate next to the old one
# (create_before_destroy) and the HTTPS proxy never points at a deleted one.
resource "google_compute_managed_ssl_certificate" "collector" {
  name = "${var.service_name}-cert-${substr(sha256(var.domain), 0, 8)}"

  managed {
    domains = [var.domain]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_ssl_policy" "modern" {
  name            = "${var.service_name}-tls"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_region_network_endpoint_group" "collector" {
  name                  = "${var.service_name}-neg"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloud_run_v2_service.collector.name
  }
}

resource "google_compute_backend_service" "collector" {
  name                  = "${var.service_name}-backend"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  security_policy       = google_compute_security_policy.collector.id

  backend {
    group = google_compute_region_network_endpoint_group.collector.id
  }

  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

resource "google_compute_url_map" "https" {
  name            = "${var.service_name}-https"
  default_service = google_compute_backend_service.collector.id
}

resource "google_compute_target_https_proxy" "collector" {
  name             = "${var.service_name}-https"
  url_map          = google_compute_url_map.https.id
  ssl_certificates = [google_compute_managed_ssl_certificate.collector.id]
  ssl_policy       = google_compute_ssl_policy.modern.id
}

resource "google_compute_global_forwarding_rule" "https" {
  name                  = "${var.service_name}-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.collector.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.collector.id
}

# Plain HTTP only redirects. 308 keeps the method and body, so a beacon posted to
# http:// is repeated as a POST to https:// instead of turning into a GET.
resource "google_compute_url_map" "http_redirect" {
  name = "${var.service_name}-http-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "PERMANENT_REDIRECT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "redirect" {
  name    = "${var.service_name}-http-redirect"
  url_map = google_compute_url_map.http_redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  name                  = "${var.service_name}-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.collector.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.redirect.id
}
