#!/usr/bin/env Rscript
## lme4 references for glmer's inference (issue 20): Wald intervals, likelihood-ratio tables, drop1 and the
## parametric bootstrap, for the cases in validation/glmer_inference_cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_glmer_inference.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_glmer_inference) at full precision
## (jsonlite digits = NA) with the R and lme4 versions. Non-zero exit if any case failed.
##
## Every model is fitted with glmerControl(tolPwrss = 1e-12): lme4's default PIRLS tolerance (1e-7) leaves
## its criterion one PIRLS step behind (up to ~1e-3 in -2 log L, ~1 % in the finite-difference SEs; see
## REPORT_GLMM.md), which sparselmm does not reproduce. The control is recorded in each fit's call, so
## drop1's refits (update()), the anova's reduced models and bootMer's refit() use it too.
##
## Per case:
##   wald   confint(g, method = "Wald")                      (NA rows for the variance parameters)
##   anova  anova(r1, ..., g, model.names = ...)              (the reduced models of cs$anova, then g)
##   drop1  drop1(g, test = "Chisq")
##   boot   (cases with cs$boot) bootMer(g, FUN, nsim, seed) with lme4's confint(method = "boot") statistic
##          plus each refit's -2 log L, confint(bm, type = "perc"), and the simulated responses themselves
##          (simulate(g, nsim) after set.seed(seed): the responses bootMer refits), so that sparselmm can refit
##          the same responses and the comparison is deterministic.
##   pbmodcomp (cases with cs$pbmodcomp: small, nsim, seed) pbkrtest's parametric-bootstrap LRT of the small
##          model g0 against g: PBmodcomp(g, g0, nsim) run live after set.seed(seed) (its refits use lme4's
##          default control, as pbkrtest's refit(sm, newresp) calls do); then the responses it refitted
##          (pbkrtest 0.5.2's PBrefdist draws simulate(g0, nsim) from the current RNG state: set.seed(seed)
##          again) refitted with the tight control, each model's -2 log L kept, and PBmodcomp(g, g0, ref = ...)
##          of those statistics, so that sparselmm can refit the same responses deterministically.
##   profile (cases with cs$profile) confint(g, method = "profile") (lme4's spline-interpolated ends), and
##          for each fixed effect the signed root deviance zeta of a fresh constrained fit at each of lme4's
##          ends (glmer of the model with that column of X moved to the offset, from glmer's own start):
##          where it is not +-qnorm(0.975), lme4's profile stopped above the constrained optimum there.
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4", "pbkrtest", "jsonlite")
args <- script_args(file.path("validation", "reference_glmer_inference"))
cases <- select_cases(fromJSON(file.path("validation", "glmer_inference_cases.json"), simplifyVector = FALSE), args$rest)

TIGHT <- glmerControl(tolPwrss = 1e-12)

## a table as columns (NA as null) with its row names
table_of <- function(tab) {
  tab <- as.data.frame(tab)
  out <- lapply(tab, function(col) I(unname(as.numeric(col))))
  c(list(rownames = I(rownames(tab))), out)
}

## lme4's confint(method = "boot") statistic (confint.merMod's bootFun: the SDs and correlations of
## Cv_to_Sv(theta), unscaled for a GLMM; sigma(x) where the family has a dispersion; the fixed effects),
## with each refit's -2 log L appended as ".deviance"
boot_fun <- function(x) {
  useSc <- as.logical(x@devcomp$dims[["useSc"]])
  ss <- lme4:::Cv_to_Sv(x@theta, n = lengths(x@cnms))
  if (useSc) ss <- c(ss, sigma(x))
  c(ss, fixef(x), .deviance = -2 * as.numeric(logLik(x)))
}

## one simulated response as the numbers sparselmm fits: a two-column (cbind) response as the proportion
## of successes (its trials are the fit's), anything else as it is
as_response <- function(r) if (is.matrix(r)) r[, 1] / rowSums(r) else as.numeric(r)

## zeta of the fit with fixed effect j held at x: glmer of the model with X's column j moved to the offset
## (the other columns as one matrix covariate, the case's random-effects terms), from glmer's own start
held_zeta <- function(cs, d, g, j, x) {
  X <- getME(g, "X")
  d2 <- d
  d2$heldX <- X[, -j, drop = FALSE]
  d2$heldoff <- x * X[, j] + (if (is.null(cs$offset)) 0 else d[[cs$offset]])
  form <- as.formula(cs$formula)
  res <- vapply(findbars(form), function(b) paste0("(", paste(deparse(b), collapse = ""), ")"), "")
  f <- paste(paste(deparse(form[[2]]), collapse = ""), "~ 0 + heldX +", paste(res, collapse = " + "))
  cs2 <- cs
  cs2$offset <- "heldoff"
  h <- suppressWarnings(suppressMessages(glmer_case(cs2, d2, formula = f, control = TIGHT)))
  dev <- -2 * as.numeric(logLik(h)) + 2 * as.numeric(logLik(g))
  sign(x - fixef(g)[[j]]) * sqrt(max(0, dev))
}

## a test table (PBmodcomp's $test) as named columns
test_of <- function(tab) list(rownames = I(rownames(tab)), stat = vec(tab$stat), df = vec(tab$df),
                              p.value = vec(tab$p.value))

## the pbmodcomp section (see the header): the live PBmodcomp, then its responses refitted with TIGHT
pb_section <- function(cs, d, g, keep) {
  pbc <- cs$pbmodcomp
  nsim <- as.integer(pbc$nsim)
  seed <- as.integer(pbc$seed)
  g0 <- keep(glmer_case(cs, d, formula = pbc$small, control = TIGHT))
  t0 <- proc.time()[["elapsed"]]
  set.seed(seed)
  pb <- suppressWarnings(suppressMessages(PBmodcomp(g, g0, nsim = nsim)))
  pb_seconds <- proc.time()[["elapsed"]] - t0
  set.seed(seed)
  ss <- simulate(g0, nsim = nsim)
  refit_dev <- function(m, y) tryCatch(-2 * as.numeric(logLik(suppressWarnings(suppressMessages(
    refit(m, y, control = TIGHT))))), error = function(e) NA_real_)
  dev <- t(vapply(seq_len(nsim), function(i) c(refit_dev(g0, ss[[i]]), refit_dev(g, ss[[i]])), c(0, 0)))
  ref <- dev[, 1] - dev[, 2]  # 2 (logLik_large - logLik_small), pbkrtest's statistic
  tight <- suppressWarnings(PBmodcomp(g, g0, ref = ref[is.finite(ref)]))
  list(
    small = pbc$small, nsim = nsim, seed = seed, tobs = as.numeric(pb$LRTstat[["tobs"]]),
    minus2loglik_small = -2 * as.numeric(logLik(g0)), test = test_of(pb$test), ref = vec(pb$ref),
    samples = vec(pb$samples), n_extreme = pb$n.extreme, seconds = pb_seconds,
    responses = rows_of(t(sapply(seq_len(nsim), function(i) as_response(ss[[i]])))),
    dev_small = vec(dev[, 1]), dev_large = vec(dev[, 2]), tight_test = test_of(tight$test),
    tight_samples = vec(tight$samples), tight_n_extreme = tight$n.extreme,
    ## the live run's statistics against these (default against tight PIRLS tolerance): the same responses
    live_vs_tight = max(abs(pb$ref - ref), na.rm = TRUE))
}

run_case <- function(cs) {
  started <- proc.time()[["elapsed"]]
  d <- glmm_data(cs)
  messages <- character(0)
  keep <- function(expr) withCallingHandlers(expr,
    warning = function(w) { messages <<- c(messages, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { messages <<- c(messages, conditionMessage(m)); invokeRestart("muffleMessage") })
  t0 <- proc.time()[["elapsed"]]
  g <- keep(glmer_case(cs, d, control = TIGHT))
  fit_seconds <- proc.time()[["elapsed"]] - t0
  useSc <- as.logical(g@devcomp$dims[["useSc"]])
  out <- list(
    id = cs$id, r_version = R.version.string, lme4_version = as.character(packageVersion("lme4")),
    control = "glmerControl(tolPwrss = 1e-12)",
    beta = vec(fixef(g)), beta_names = I(names(fixef(g))), theta = vec(getME(g, "theta")),
    se = vec(sqrt(diag(as.matrix(vcov(g))))), minus2loglik = -2 * as.numeric(logLik(g)), sigma = sigma(g),
    param_names = I(c(lme4:::profnames(g, TRUE, useSc = useSc), names(fixef(g)))),
    fit_seconds = fit_seconds)

  ## Wald intervals
  w <- confint(g, method = "Wald")
  out$wald <- list(rownames = I(rownames(w)), lower = vec(w[, 1]), upper = vec(w[, 2]), colnames = I(colnames(w)))

  ## likelihood-ratio table against the reduced models
  reduced <- lapply(cs$anova, function(f) keep(glmer_case(cs, d, formula = f, control = TIGHT)))
  ids <- c(paste0("r", seq_along(reduced)), "full")
  tab <- keep(do.call(anova, c(reduced, list(g), list(model.names = ids))))
  out$anova <- c(list(models = I(ids), formulas = I(c(unlist(cs$anova), cs$formula))), table_of(tab))

  ## drop1: each fixed-effect term dropped in turn (update() refits with the fit's tight control)
  t0 <- proc.time()[["elapsed"]]
  dt <- keep(drop1(g, test = "Chisq"))
  out$drop1 <- c(table_of(dt), list(seconds = proc.time()[["elapsed"]] - t0))

  ## the parametric bootstrap
  if (!is.null(cs$boot)) {
    nsim <- as.integer(cs$boot$nsim)
    seed <- as.integer(cs$boot$seed)
    ## bootMer evaluates the fit's control argument (..case_control..) in its caller's frame: this one
    ..case_control.. <- TIGHT
    t0 <- proc.time()[["elapsed"]]
    bm <- suppressWarnings(suppressMessages(bootMer(g, boot_fun, nsim = nsim, seed = seed)))
    boot_seconds <- proc.time()[["elapsed"]] - t0
    names_t <- c(out$param_names, ".deviance")
    ci <- suppressWarnings(confint(bm, type = "perc"))
    ## the responses bootMer refitted: the same seed, the same simulate() call
    set.seed(seed)
    ss <- simulate(g, nsim = nsim, na.action = na.exclude)
    resp <- sapply(seq_len(nsim), function(i) as_response(ss[[i]]))
    ## check that they are bootMer's: replicate 1 refitted here gives bootMer's first row
    r1 <- suppressWarnings(suppressMessages(refit(g, ss[[1]], control = TIGHT)))
    first_diff <- max(abs(boot_fun(r1) - bm$t[1, ]))
    out$boot <- list(
      nsim = nsim, seed = seed, names = I(names_t), t0 = vec(bm$t0),
      draws = rows_of(bm$t), n_failed = sum(!stats::complete.cases(bm$t)),
      ci_perc = list(rownames = I(rownames(ci)), lower = vec(ci[, 1]), upper = vec(ci[, 2])),
      responses = rows_of(t(resp)), first_replicate_check = first_diff, seconds = boot_seconds)
  }
  ## pbkrtest's parametric-bootstrap likelihood-ratio test against the small model
  if (!is.null(cs$pbmodcomp)) out$pbmodcomp <- pb_section(cs, d, g, keep)
  ## likelihood-profile intervals
  if (isTRUE(cs$profile)) {
    t0 <- proc.time()[["elapsed"]]
    ci <- keep(confint(g, method = "profile"))
    prof_seconds <- proc.time()[["elapsed"]] - t0
    p <- length(fixef(g))
    nv <- nrow(ci) - p
    zeta <- matrix(NA_real_, p, 2)
    for (j in seq_len(p)) for (k in 1:2) zeta[j, k] <- held_zeta(cs, d, g, j, ci[nv + j, k])
    out$profile <- list(rownames = I(rownames(ci)), lower = vec(ci[, 1]), upper = vec(ci[, 2]),
                        colnames = I(colnames(ci)), zeta_fixed_lower = vec(zeta[, 1]),
                        zeta_fixed_upper = vec(zeta[, 2]), seconds = prof_seconds)
  }
  out$messages <- I(unique(messages))
  out$seconds <- proc.time()[["elapsed"]] - started
  out
}

report <- function(res, secs) {
  line <- sprintf("%-22s -2logL %.6f  anova %d models  drop1 %d terms%s%s%s  %.1fs", res$id, res$minus2loglik,
                  length(res$anova$models), length(res$drop1$rownames) - 1L,
                  if (is.null(res$boot)) "" else sprintf("  boot nsim=%d (%d failed, check %.1e)", res$boot$nsim,
                                                         res$boot$n_failed, res$boot$first_replicate_check),
                  if (is.null(res$profile)) "" else sprintf("  profile %.1fs", res$profile$seconds),
                  if (is.null(res$pbmodcomp)) "" else sprintf("  PBmodcomp nsim=%d (live vs tight %.1e) %.1fs",
                                                              res$pbmodcomp$nsim, res$pbmodcomp$live_vs_tight,
                                                              res$pbmodcomp$seconds),
                  secs)
  if (!is.null(res$boot) && !(res$boot$first_replicate_check < 1e-8)) attr(line, "failed") <- TRUE
  ## PBmodcomp's responses are not those refitted with the tight control (lme4's default PIRLS tolerance
  ## moves a criterion by up to ~1e-3, REPORT_GLMM.md)
  if (!is.null(res$pbmodcomp) && !(res$pbmodcomp$live_vs_tight < 1e-2)) attr(line, "failed") <- TRUE
  line
}

run_cases(cases, run_case, args$out_dir, report)
