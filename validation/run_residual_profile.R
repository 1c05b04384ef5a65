#!/usr/bin/env Rscript
## glmmTMB references for the likelihood-profile intervals of a residual structure's parameters (issue 21 item 5):
## the cases of validation/residual_profile_cases.json (data: validation/simulate_residual.py).
##
## Usage (from the repository root):
##   Rscript validation/run_residual_profile.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_residual_profile) at full precision (jsonlite
## digits = NA) with the R and glmmTMB versions. Non-zero exit if any case failed.
##
## Profiles are on the ML criterion (lme4's and glmmTMB's; a REML case is profiled on ML too, after sparselmm's
## refit_ml), so every case is fitted by glmmTMB with REML = FALSE:
##   varIdent  glmmTMB(y ~ x + (1 | subj), dispformula = ~ f): betad = (log sigma^2, 2 log ratio_b, 2 log ratio_c)
##   corAR1    glmmTMB(y ~ x + (1 | subj) + ar1(0 + factor(t) | subj), dispformula = ~ 0): the ar1 term is the
##             residual (its SD is sigma; theta = rho / sqrt(1 - rho^2)); the latent process covers every level of
##             t, so a subject's gaps get rho^|dt| as nlme's corAR1 (corARMA) does; the fixed residual variance of
##             dispformula = ~ 0 is negligible (glmmTMB's criterion equals nlme's to 1e-9 relative here).
## Per parameter (.sig01, .sigma, .ratio.<level>, .rho, x), two intervals:
##   exact   the ends where the constrained ML criterion (the parameter held on glmmTMB's internal scale, every
##           other one re-optimised by nlminb on TMB's exact gradient, from the estimates) is qchisq(0.95, 1)
##           above the optimum, solved by uniroot to 1e-10 on the internal scale: no interpolation;
##   spline  glmmTMB's confint(method = "profile") (a spline through its profile grid; ~1e-3 accurate).
## Both mapped to sparselmm's scale (exp(theta) for SDs, exp(betad / 2) for sigma and ratios, rho).
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("glmmTMB", "jsonlite")

args <- script_args(file.path("validation", "reference_residual_profile"))
cases <- select_cases(fromJSON(file.path("validation", "residual_profile_cases.json"), simplifyVector = FALSE),
                      args$rest)
Q <- qchisq(0.95, 1)

## the exact profile interval of par[k] on its internal scale: constrained fits by nlminb on TMB's gradient
exact_ends <- function(obj, par, k, se) {
  base <- 2 * obj$fn(par)
  free <- seq_along(par)[-k]
  crit <- function(v) {
    start <- par[free]
    f <- function(p) { q <- par; q[free] <- p; q[k] <- v; 2 * obj$fn(q) }
    g <- function(p) { q <- par; q[free] <- p; q[k] <- v; 2 * obj$gr(q)[free] }
    fit <- nlminb(start, f, g, control = list(rel.tol = 1e-14, x.tol = 1e-12, eval.max = 1e4, iter.max = 1e4))
    fit$objective - base - Q
  }
  lo <- uniroot(crit, c(par[k] - 3 * se, par[k]), extendInt = "downX", tol = 1e-10)$root
  hi <- uniroot(crit, c(par[k], par[k] + 3 * se), extendInt = "upX", tol = 1e-10)$root
  c(lo, hi)
}

run_case <- function(cs) {
  data <- load_data(cs$data)
  ctrl <- glmmTMBControl(optCtrl = list(iter.max = 1e4, eval.max = 1e4, rel.tol = 1e-14))
  if (!is.null(cs$ar1)) {
    data$tf_ <- factor(data[[cs$ar1$time]])
    f <- as.formula(sprintf("%s + ar1(0 + tf_ | %s)", cs$formula, cs$ar1$group))
    m <- glmmTMB(f, data, dispformula = ~ 0, REML = FALSE, control = ctrl)
  } else {
    m <- glmmTMB(as.formula(cs$formula), data, dispformula = as.formula(paste("~", cs$dispformula)), REML = FALSE,
                 control = ctrl)
  }
  obj <- m$obj
  par <- m$fit$par
  se <- sqrt(diag(vcov(m, full = TRUE)))
  nm <- names(par)
  ib <- which(nm == "beta"); id <- which(nm == "betad"); it <- which(nm == "theta")
  ## sparselmm's name, the internal index, the map to sparselmm's scale, glmmTMB's confint parm and row
  specs <- list(list(".sig01", it[1], exp, "theta_", 1), list("x", ib[2], identity, "beta_", 2))
  if (!is.null(cs$ar1)) {
    specs <- c(specs, list(list(".sigma", it[2], exp, "theta_", 2),
                           list(".rho", it[3], function(v) v / sqrt(1 + v^2), "theta_", 3)))
  } else {
    lev <- levels(factor(data[[cs$dispformula]]))
    specs <- c(specs, list(list(".sigma", id[1], function(v) exp(v / 2), "disp_", 1)))
    for (i in seq_along(lev)[-1]) {
      specs <- c(specs, list(list(paste0(".ratio.", lev[i]), id[i], function(v) exp(v / 2), "disp_", i)))
    }
  }
  spline <- list()
  for (p in unique(vapply(specs, function(s) s[[4]], ""))) spline[[p]] <- confint(m, method = "profile", parm = p)
  out <- list()
  for (s in specs) {
    k <- s[[2]]
    ends <- exact_ends(obj, par, k, se[k])
    sp <- spline[[s[[4]]]][s[[5]], 1:2]
    out[[s[[1]]]] <- list(estimate = s[[3]](par[[k]]), exact = s[[3]](ends), spline = unname(s[[3]](sp)))
  }
  list(id = cs$id, criterion = 2 * obj$fn(par), intervals = out, r_version = R.version.string,
       glmmTMB_version = as.character(packageVersion("glmmTMB")))
}

run_cases(cases, run_case, args$out_dir, function(res, seconds) {
  sprintf("%-16s criterion %.10f  (%.1f s)", res$id, res$criterion, seconds)
})
