# Cloud Armor policy on the load balancer's backend. Rules run in priority order
# (lowest number first) and the first match decides.

locals {
  # allowed_origins as one RE2 pattern. A literal dot becomes [.] because Cloud
  # Armor expressions are CEL strings, where a backslash escape such as \. is not
  # valid. "*." (any subdomain) becomes one or more host labels.
  origin_patterns = [
    for origin in var.allowed_origins :
    replace(replace(origin, ".", "[.]"), "*[.]", "[a-z0-9-]+([.][a-z0-9-]+)*[.]")
  ]
  origin_regex  = "^(${join("|", local.origin_patterns)})$"
  check_origins = !contains(var.allowed_origins, "*")
}

resource "google_compute_security_policy" "collector" {
  name        = "${var.service_name}-armor"
  description = "Per-IP rate limit, origin allow-list and Log4j probe filter for the collector"
  type        = "CLOUD_ARMOR"

  # Prometheus metrics are for operators inside the project, not for the internet.
  rule {
    action      = "deny(404)"
    priority    = 100
    description = "Hide /metrics from the internet"
    match {
      expr {
        expression = "request.path.startsWith('/metrics')"
      }
    }
  }

  rule {
    action      = "deny(403)"
    priority    = 200
    description = "Block Log4j JNDI lookup probes"
    match {
      expr {
        expression = "evaluatePreconfiguredWaf('cve-canary')"
      }
    }
  }

  # The collector checks the Origin against the API key's origins as well. This
  # rule stops foreign pages at the edge, before they cost a Cloud Run request.
  dynamic "rule" {
    for_each = local.check_origins ? [1] : []
    content {
      action      = "deny(403)"
      priority    = 300
      description = "Collect requests from origins not allowed"
      match {
        expr {
          expression = "has(request.headers['origin']) && !request.headers['origin'].matches('${local.origin_regex}') && request.path.endsWith('/collect')"
        }
      }
    }
  }

  # Per client IP: over the limit a request gets 429, and an IP that keeps going
  # over it is banned for armor_ban_seconds. enforce_on_key IP is the address of the
  # TCP client as the load balancer sees it, not a header the client can set.
  rule {
    action      = "rate_based_ban"
    priority    = 1000
    description = "Per-IP request rate limit"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.armor_requests_per_minute
        interval_sec = 60
      }
      ban_threshold {
        count        = 5 * var.armor_requests_per_minute
        interval_sec = 300
      }
      ban_duration_sec = var.armor_ban_seconds
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "Default rule"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}
