# Fit one benchmark workload with lme4 in this (fresh) R process and write a JSON record.
#
# Run by benchmarks/run.py:
#   Rscript benchmarks/fit_lme4.R <csv> <formula> <REML TRUE|FALSE> <factor,cols> <out.json> \
#           [min_calls=20] [min_seconds=0.5]
#
# The data are read (data.table::fread when installed, else read.csv) and converted to factors before
# the clock starts; the fit time is system.time(lmer(...))["elapsed"]. Peak RSS of the fit is VmHWM
# right after the fit. Afterwards the set-up (lmer(devFunOnly = TRUE)) is timed, and the deviance
# function is called at the optimum theta in batches (at least min_calls calls and min_seconds seconds);
# the time per evaluation is the median batch time / batch size.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 5) stop("usage: fit_lme4.R csv formula REML factors out.json [min_calls] [min_seconds]")
csv <- args[[1]]
form <- as.formula(args[[2]])
reml <- as.logical(args[[3]])
factors <- if (nzchar(args[[4]])) strsplit(args[[4]], ",", fixed = TRUE)[[1]] else character(0)
out <- args[[5]]
min_calls <- if (length(args) >= 6) as.integer(args[[6]]) else 20L
min_seconds <- if (length(args) >= 7) as.numeric(args[[7]]) else 0.5

suppressMessages(library(lme4))

status_mb <- function() {
  l <- tryCatch(readLines("/proc/self/status"), error = function(e) character(0))
  get <- function(key) {
    x <- grep(paste0("^", key, ":"), l, value = TRUE)
    if (length(x) == 0) return(NA_real_)
    as.numeric(strsplit(trimws(sub(paste0(key, ":"), "", x)), " +")[[1]][1]) / 1024
  }
  list(VmRSS = get("VmRSS"), VmHWM = get("VmHWM"))
}

rec <- list(program = "lme4", ok = FALSE,
            version = as.character(packageVersion("lme4")),
            matrix_version = as.character(packageVersion("Matrix")),
            r_version = R.version.string,
            blas = unname(extSoftVersion()["BLAS"]),
            lapack = La_library())

res <- tryCatch({
  t0 <- proc.time()[["elapsed"]]
  reader <- if (requireNamespace("data.table", quietly = TRUE)) "data.table::fread" else "read.csv"
  d <- if (reader == "read.csv") read.csv(csv) else as.data.frame(data.table::fread(csv, showProgress = FALSE))
  for (f in factors) d[[f]] <- factor(d[[f]])
  rec$reader <- reader
  rec$load_seconds <- proc.time()[["elapsed"]] - t0
  rec$n <- nrow(d)
  rec$levels <- setNames(lapply(factors, function(f) nlevels(d[[f]])), factors)
  invisible(gc())
  rec$mem_before_fit_mb <- status_mb()

  tm <- system.time(m <- suppressWarnings(suppressMessages(lmer(form, d, REML = reml))))
  rec$fit_seconds <- tm[["elapsed"]]
  rec$fit_cpu_seconds <- tm[["user.self"]] + tm[["sys.self"]]
  rec$mem_after_fit_mb <- status_mb()
  th <- getME(m, "theta")
  rec$theta <- unname(th)
  rec$objective <- unname(if (reml) m@devcomp$cmp[["REML"]] else m@devcomp$cmp[["dev"]])
  rec$fixef <- as.list(fixef(m))
  rec$n_evals <- m@optinfo$feval
  # lme4's convergence check (deriv12) makes 2 k^2 further calls when derivatives were computed
  k <- length(th)
  rec$n_evals_total <- m@optinfo$feval + if (!is.null(m@optinfo$derivs)) 2 * k^2 else 0
  rec$optimizer <- m@optinfo$optimizer
  rec$messages <- as.list(c(m@optinfo$conv$lme4$messages, m@optinfo$warnings))
  rec$converged <- length(m@optinfo$conv$lme4$messages) == 0

  ts <- system.time(f <- lmer(form, d, REML = reml, devFunOnly = TRUE))
  rec$setup_seconds <- ts[["elapsed"]]
  if (min_calls > 0) {
    # batches of b calls (each >= ~20 ms), at least min_calls calls, 5 batches and min_seconds;
    # per-eval time = median batch / b (robust to other processes), as py_worker.time_calls
    now <- function() proc.time()[["elapsed"]]
    t <- now(); invisible(f(th)); first <- now() - t
    b <- max(1L, as.integer(ceiling(0.02 / max(first, 1e-4))))
    batches <- numeric(0)
    t_all <- now()
    repeat {
      t <- now()
      for (i in seq_len(b)) invisible(f(th))
      batches <- c(batches, now() - t)
      total <- now() - t_all
      if (total > 60 || (length(batches) * b >= min_calls && length(batches) >= 5 && total >= min_seconds)) break
    }
    rec$per_eval_seconds <- median(batches) / b
    rec$per_eval_mean_seconds <- sum(batches) / (b * length(batches))
    rec$per_eval_calls <- b * length(batches)
    rec$per_eval_batch <- b
  }
  rec$ok <- TRUE
  rec
}, error = function(e) {
  rec$error <- conditionMessage(e)
  rec
})

jsonlite::write_json(res, out, auto_unbox = TRUE, digits = NA, pretty = TRUE)
if (!isTRUE(res$ok)) quit(status = 1)
