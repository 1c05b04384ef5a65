#!/usr/bin/env Rscript
## lme4 references for confidence intervals, likelihood-ratio tables, drop1, the parametric bootstrap
## profile intervals and simulate()'s moments (issue 11), for the cases in validation/reference_ci/cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_lme4_ci.R [--out DIR] [--skip-slow] [wald] [anova] [drop1] [boot] [profile]
##                                    [profile_table] [simulate]
##
## With no section names every section runs. Each section writes DIR/<section>.json (default DIR =
## validation/reference_ci) with jsonlite::write_json(digits = NA) and the R / lme4 versions.
## --skip-slow leaves out the profiles of the models listed under "slow" in cases.json (over a minute
## each in lme4). validation/compare_ci.py compares sparselmm with what this script writes.

## the helpers shared by the validation scripts, from this script's folder (Rscript names it in --file=)
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4", "jsonlite")

args <- script_args(file.path("validation", "reference_ci"), c(skip_slow = "--skip-slow"))
out_dir <- args$out_dir
sections <- args$rest
skip_slow <- args$skip_slow
all_sections <- c("wald", "anova", "drop1", "boot", "profile", "profile_table", "simulate")
if (!length(sections)) sections <- all_sections
bad <- setdiff(sections, all_sections)
if (length(bad)) stop("unknown section(s): ", paste(bad, collapse = ", "))

spec <- fromJSON(file.path("validation", "reference_ci", "cases.json"), simplifyVector = FALSE)
versions <- list(
  r_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  boot_version = as.character(packageVersion("boot"))
)

## each model is fitted once; the data object is shared per source so anova's same-data check passes
data_cache <- list()
fits <- list()
fit_model <- function(id) {
  if (!is.null(fits[[id]])) return(fits[[id]])
  cs <- spec$models[[id]]
  if (is.null(data_cache[[cs$data]])) data_cache[[cs$data]] <<- load_data(cs$data)
  m <- suppressWarnings(suppressMessages(lmer_case(cs, data_cache[[cs$data]])))
  fits[[id]] <<- m
  m
}

table_out <- function(tab) {
  cols <- lapply(as.list(as.data.frame(tab, check.names = FALSE)), vec)
  list(rows = I(rownames(tab)), columns = I(colnames(tab)), values = cols)
}
write_section <- function(name, payload) {
  path <- file.path(out_dir, paste0(name, ".json"))
  write_json(c(versions, payload), path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null",
             null = "null")
  cat(sprintf("wrote %s\n", path))
}

if ("wald" %in% sections) {
  out <- list()
  for (id in unlist(spec$wald)) {
    m <- fit_model(id)
    per_level <- lapply(unlist(spec$wald_levels), function(lv) {
      ci <- confint(m, method = "Wald", level = lv)
      list(level = lv, names = I(rownames(ci)), columns = I(colnames(ci)), lower = vec(ci[, 1]),
           upper = vec(ci[, 2]))
    })
    out[[id]] <- list(model = spec$models[[id]], intervals = per_level)
  }
  write_section("wald", list(cases = out))
}

if ("anova" %in% sections) {
  out <- list()
  for (cs in spec$anova) {
    ids <- unlist(cs$models)
    mods <- lapply(ids, fit_model)
    msgs <- character(0)
    tab <- withCallingHandlers(
      do.call(anova, c(mods, list(model.names = ids))),
      message = function(m) {
        msgs <<- c(msgs, trimws(conditionMessage(m)))
        invokeRestart("muffleMessage")
      })
    out[[cs$id]] <- c(list(models = I(ids), messages = I(msgs)), table_out(tab))
  }
  write_section("anova", list(cases = out))
}

if ("drop1" %in% sections) {
  out <- list()
  for (cs in spec$drop1) {
    m <- fit_model(cs$model)
    tab <- suppressMessages(drop1(m, test = cs$test))
    out[[cs$id]] <- c(list(model = cs$model, test = cs$test), table_out(tab))
  }
  write_section("drop1", list(cases = out))
}

if ("boot" %in% sections) {
  cs <- spec$boot
  m <- fit_model(cs$model)
  vn <- c(sprintf(".sig%02d", seq_along(getME(m, "theta"))), ".sigma")
  fun <- function(x) {
    ss <- lme4:::Cv_to_Sv(getME(x, "theta"), n = lengths(x@cnms), s = sigma(x))
    c(setNames(ss, vn), fixef(x))
  }
  tm <- system.time(bb <- suppressWarnings(suppressMessages(
    bootMer(m, FUN = fun, nsim = cs$nsim, seed = cs$seed))))
  ok <- stats::complete.cases(bb$t)
  tt <- bb$t[ok, , drop = FALSE]
  cis <- lapply(c("perc", "basic", "norm"), function(tp) {
    ci <- suppressWarnings(confint(bb, type = tp, level = 0.95))
    list(type = tp, lower = vec(ci[, 1]), upper = vec(ci[, 2]))
  })
  write_section("boot", list(
    model = cs$model, nsim = cs$nsim, seed = cs$seed, names = I(names(bb$t0)), t0 = vec(bb$t0),
    n_ok = sum(ok), mean = vec(colMeans(tt)), sd = vec(apply(tt, 2, sd)),
    draws = lapply(seq_len(ncol(bb$t)), function(j) vec(bb$t[, j])),
    confint = cis, seconds = as.numeric(tm[["elapsed"]])
  ))
}

if ("profile" %in% sections) {
  out <- list()
  ids <- unlist(spec$profile)
  if (skip_slow) ids <- setdiff(ids, unlist(spec$slow))
  for (id in ids) {
    m <- fit_model(id)
    msgs <- character(0)
    tm <- system.time(ci <- withCallingHandlers(
      confint(m, method = "profile", level = 0.95),
      warning = function(w) {
        msgs <<- c(msgs, conditionMessage(w))
        invokeRestart("muffleWarning")
      },
      message = function(mm) invokeRestart("muffleMessage")))
    out[[id]] <- list(model = spec$models[[id]], names = I(rownames(ci)), lower = vec(ci[, 1]),
                      upper = vec(ci[, 2]), warnings = I(unique(msgs)), seconds = as.numeric(tm[["elapsed"]]))
  }
  write_section("profile", list(cases = out))
}

if ("profile_table" %in% sections) {
  ## lme4's zeta table, as.data.frame(profile(m)): zeta and every parameter at each point of each profile
  out <- list()
  for (id in unlist(spec$profile_table)) {
    m <- fit_model(id)
    tm <- system.time(pr <- suppressWarnings(suppressMessages(profile(m))))
    d <- as.data.frame(pr)
    pars <- setdiff(names(d), c(".zeta", ".par", ".focal"))
    out[[id]] <- list(model = spec$models[[id]], par = I(as.character(d$.par)), focal = vec(d$.focal),
                      zeta = vec(d$.zeta), names = I(pars), values = lapply(pars, function(p) vec(d[[p]])),
                      seconds = as.numeric(tm[["elapsed"]]))
  }
  write_section("profile_table", list(cases = out))
}

if ("simulate" %in% sections) {
  ## per row: the mean and variance of nsim simulated responses, and the covariance of each row with the
  ## next one (rows sharing a grouping level are correlated); unconditional (use.u = FALSE) and use.u = TRUE
  cs <- spec$simulate
  out <- list()
  for (id in unlist(cs$models)) {
    m <- fit_model(id)
    per_u <- lapply(c(FALSE, TRUE), function(uu) {
      Y <- as.matrix(simulate(m, nsim = cs$nsim, seed = cs$seed, use.u = uu))
      Yc <- Y - rowMeans(Y)
      n <- nrow(Y)
      list(use_u = uu, mean = vec(rowMeans(Y)), var = vec(apply(Y, 1, var)),
           cov_next = vec(rowSums(Yc[-n, , drop = FALSE] * Yc[-1, , drop = FALSE]) / (ncol(Y) - 1)))
    })
    out[[id]] <- list(model = spec$models[[id]], nsim = cs$nsim, seed = cs$seed, fixef = vec(fixef(m)),
                      sigma = sigma(m), theta = vec(getME(m, "theta")), draws = per_u)
  }
  write_section("simulate", list(cases = out))
}
