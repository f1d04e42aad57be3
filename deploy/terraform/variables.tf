variable "project_id" {
  description = "Google Cloud project id that receives every resource."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service, its serverless NEG, the image repository and the archive bucket."
  type        = string
  default     = "us-central1"
}

variable "domain" {
  description = "Host name of the collector, such as collect.example.com. The managed certificate is issued for it once its DNS A record points at the load balancer address."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.domain))
    error_message = "The domain must be a lower-case host name such as collect.example.com, without a scheme or path."
  }
}

variable "allowed_origins" {
  description = "Browser origins that may post events, in the keys file format: https://www.example.com or https://*.example.com. Cloud Armor rejects collect requests whose Origin header matches none of them, and [\"*\"] turns that rule off. Requests without an Origin header (server to server) are not affected."
  type        = list(string)

  validation {
    condition = length(var.allowed_origins) > 0 && alltrue([
      for origin in var.allowed_origins :
      origin == "*" || can(regex("^https?://(\\*\\.)?[a-z0-9.-]+(:[0-9]{1,5})?$", origin))
    ])
    error_message = "Each origin must be scheme://host[:port] in lower case, optionally with a leading *. for subdomains, or \"*\"."
  }
}

variable "image" {
  description = "Container image of the collector, for example us-central1-docker.pkg.dev/PROJECT/collector/collector:0.1.0."
  type        = string
}

variable "service_name" {
  description = "Name of the Cloud Run service, also used as the prefix of the load balancer resources."
  type        = string
  default     = "collector"
}

variable "topic_name" {
  description = "Pub/Sub topic that receives one message per accepted event."
  type        = string
  default     = "book-media-events"
}

variable "bigquery_location" {
  description = "Location of the raw, staging and marts datasets and of the scheduled queries (US, EU or a region)."
  type        = string
  default     = "US"
}

variable "min_instances" {
  description = "Minimum Cloud Run instances kept warm. 1 avoids a cold start on the first request after a quiet period, at the price of one idle instance."
  type        = number
  default     = 1
}

variable "max_instances" {
  description = "Maximum Cloud Run instances, which bounds cost and the publish rate towards Pub/Sub."
  type        = number
  default     = 20
}

variable "concurrency" {
  description = "Requests one instance serves at a time. A request mostly waits for the Pub/Sub confirmation, so one asyncio process serves many of them concurrently. Tune it with the load test in bench/locustfile.py."
  type        = number
  default     = 200
}

variable "cpu" {
  description = "vCPUs for each instance. The collector runs one uvicorn process, so more than 1 vCPU helps only the gRPC publisher threads."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory for each instance."
  type        = string
  default     = "512Mi"
}

variable "keys_secret_version" {
  description = "Version of the collector-keys secret mounted as the keys file. The collector reads the file only at start-up, so a new version takes effect through a new revision: change this value and apply."
  type        = string
  default     = "1"
}

variable "rate_limit_storage" {
  description = "Value of COLLECTOR_RATE_LIMIT_STORAGE. memory:// keeps limits per instance, and a redis:// URL (Memorystore) shares them and needs vpc_network and vpc_subnetwork. Put no password here: the value is stored in the service definition in plain text."
  type        = string
  default     = "memory://"

  validation {
    condition     = can(regex("^(memory://|redis://|rediss://|redis\\+sentinel://)", var.rate_limit_storage))
    error_message = "The rate limit storage must be memory:// or a redis:// URL."
  }
}

variable "vpc_network" {
  description = "VPC network for Direct VPC egress, needed to reach Memorystore. null disables VPC egress."
  type        = string
  default     = null
}

variable "vpc_subnetwork" {
  description = "Subnetwork for Direct VPC egress, used only when vpc_network is set."
  type        = string
  default     = null
}

variable "log_level" {
  description = "Value of COLLECTOR_LOG_LEVEL."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "The log level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "extra_env" {
  description = "More collector settings as environment variables, such as { COLLECTOR_IP_RATE_LIMIT = \"60000/minute\" }. They override the module's own. Names must start with COLLECTOR_, and collector/settings.py lists them all."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.extra_env) : can(regex("^COLLECTOR_[A-Z0-9_]+$", name))])
    error_message = "Every extra_env name must start with COLLECTOR_ and be upper case."
  }
}

variable "armor_requests_per_minute" {
  description = "Collect requests one client IP may send per minute before Cloud Armor responds with 429. A request carries a batch of events, and many readers can share one IP behind a NAT."
  type        = number
  default     = 600
}

variable "armor_ban_seconds" {
  description = "How long Cloud Armor bans an IP after it sends, within five minutes, more requests over the limit than five times armor_requests_per_minute (about twice the limit, kept up for five minutes)."
  type        = number
  default     = 600
}

variable "archive_nearline_after_days" {
  description = "Age in days after which archived NDJSON files move to the Nearline storage class."
  type        = number
  default     = 30
}

variable "archive_retention_days" {
  description = "Age in days after which archived NDJSON files are deleted."
  type        = number
  default     = 400
}

variable "staging_schedule" {
  description = "Schedule of the scheduled queries that run bigquery/staging/*.sql, in the BigQuery Data Transfer format (UTC)."
  type        = string
  default     = "every 1 hours"
}

variable "staging_window_days" {
  description = "Days of raw partitions, counted back from the run date, that each staging run rebuilds (the default of `collector warehouse run --lookback-days`). Rows that reach the raw table later than this after their received_at, such as a replay from the archive, need `collector warehouse run --target bigquery --full-refresh`."
  type        = number
  default     = 3
}

variable "marts_schedule" {
  description = "Schedule of the scheduled queries that run bigquery/marts/*.sql (UTC). Each rebuilds its table from staging."
  type        = string
  default     = "every day 03:30"
}

variable "deletion_protection" {
  description = "Protect the Cloud Run service and the raw table from `terraform destroy`."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that supports them."
  type        = map(string)
  default = {
    app = "book-media-collector"
  }
}
