#!/usr/bin/env Rscript
## glmmTMB references for the random-effect covariance structures diag(), cs(), ar1() and toep() in lmer and glmer
## formulas (issue 21 item 1), for the cases in validation/covstruct_cases.json (data: validation/simulate_covstruct.py).
##
## Usage (from the repository root):
##   Rscript validation/run_glmmtmb_covstruct.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_covstruct) at full precision (jsonlite
## digits = NA) with the R and glmmTMB versions and the call. Non-zero exit if any case failed.
##
## Per case: glmmTMB(formula, data, REML = cs$reml) with glmmTMB's own syntax diag(...|g), cs(...|g), us(...|g)
## and a tight optimiser (nlminb rel.tol 1e-10; 1e-12 and tighter stop with nlminb's "singular convergence (7)" at the same digits, eval.max/iter.max 1e4) so that its estimates are its optimum
## to many digits;
##   criterion  -2 * logLik(m) (with REML = TRUE glmmTMB's logLik is the restricted log-likelihood on lme4's
##              scale: for sleepstudy's (Days | Subject) both give 1743.628, REMLcrit(lmer) = -2 logLik(glmmTMB))
##   beta       fixef(m)$cond                 sigma   sigma(m)
##   terms      per grouping factor of VarCorr(m)$cond: its stddev, and for a cs or ar1 term its common /
##              lag-1 correlation (the correlation matrix's [2, 1] entry), for every term of more than one
##              coefficient the correlation matrix's first column below the diagonal (`lags`: a toep term's
##              correlations by lag); `cor`: the whole correlation matrix below the diagonal, column by column
##              (lme4's order); the structure's blockCode name
##   se         sqrt(diag(vcov(m)$cond)): the fixed effects' SEs from the joint Hessian of the criterion (sdreport;
##              compared for the GLMM cases, whose glmer SEs come from the same Hessian)
## A case with "intervals" (issue 21 item 5) also records glmmTMB's intervals of the variance parameters:
##   wald       confint(m, method = "wald", full = TRUE), its Std.Dev, Cor and sigma rows (SDs on the log scale
##              back-transformed; a cs correlation of two coefficients on glmmTMB's 2 atanh scale, the same interval
##              as atanh's)
##   profile    confint(m, method = "profile", parm = "theta_"): the ends on glmmTMB's internal theta scale (log SD;
##              cs rho = invlogit(theta) (1 + a) - a with a = 1 / (k - 1); ar1 / toep rho = theta / sqrt(1 + theta^2)),
##              mapped to the SD/correlation scale by compare_covstruct.py (a profile interval is invariant to the map)
## and a case with "lmertest_formula" lmerTest's Satterthwaite df of the equivalent lme4 model (diag(1 + x | g) =
## (1 + x || g)): summary(lmerTest::lmer(formula, data, REML = cs$reml))$coefficients[, "df"].
## A case with "family" (e.g. "poisson", "binomial") is a GLMM: glmmTMB(..., family = <family>) (the Laplace
## criterion, -2 logLik with the family's normalising constant, as glmer's; for count ~ x + (1 | subj) on
## covstruct_ar1.csv glmmTMB gives 2456.3327067836, sparselmm's glmer 2456.3327067698).
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("glmmTMB", "jsonlite")

## glmmTMB's intervals of the variance parameters (see the header)
intervals <- function(m, which) {
  out <- list()
  if ("wald" %in% which) {
    w <- confint(m, method = "wald", full = TRUE)
    keep <- grepl("^(cond\\.Std\\.Dev|cond\\.Cor|sigma$)", rownames(w))
    out$wald <- list(names = I(rownames(w)[keep]), lower = vec(w[keep, 1]), upper = vec(w[keep, 2]),
                     call = "confint(m, method = 'wald', full = TRUE)")
  }
  if ("profile" %in% which) {
    p <- confint(m, method = "profile", parm = "theta_")
    out$profile_theta <- list(names = I(rownames(p)), lower = vec(p[, 1]), upper = vec(p[, 2]),
                              call = "confint(m, method = 'profile', parm = 'theta_')")
  }
  out
}

## lmerTest's Satterthwaite df of the equivalent lme4 model
lmertest_df <- function(cs, data) {
  attach_quietly("lmerTest")
  m <- lmerTest::lmer(as.formula(cs$lmertest_formula), data = data, REML = isTRUE(cs$reml))
  co <- summary(m)$coefficients
  list(formula = cs$lmertest_formula, names = I(rownames(co)), df = vec(co[, "df"]), se = vec(co[, "Std. Error"]),
       criterion = as.numeric(-2 * logLik(m)), lmerTest_version = as.character(packageVersion("lmerTest")),
       lme4_version = as.character(packageVersion("lme4")),
       call = sprintf("summary(lmerTest::lmer(%s, data, REML = %s))$coefficients", cs$lmertest_formula,
                      if (isTRUE(cs$reml)) "TRUE" else "FALSE"))
}

args <- script_args(file.path("validation", "reference_covstruct"))
cases <- select_cases(fromJSON(file.path("validation", "covstruct_cases.json"), simplifyVector = FALSE), args$rest)

run_case <- function(cs) {
  data <- load_data(cs$data)
  ctrl <- glmmTMBControl(optCtrl = list(rel.tol = 1e-10, eval.max = 1e4, iter.max = 1e4))
  fam <- if (is.null(cs$family)) "gaussian" else cs$family
  m <- glmmTMB(as.formula(cs$formula), data = data, REML = isTRUE(cs$reml), family = fam, control = ctrl)
  vc <- VarCorr(m)$cond
  terms <- lapply(names(vc), function(g) {
    v <- vc[[g]]
    C <- attr(v, "correlation")
    list(group = g, names = I(colnames(v)), structure = unname(names(attr(v, "blockCode"))),
         sd = vec(attr(v, "stddev")), rho = if (nrow(C) > 1) C[2, 1] else NULL,
         lags = if (nrow(C) > 1) vec(C[-1, 1]) else NULL,
         cor = if (nrow(C) > 1) vec(C[lower.tri(C)]) else NULL)
  })
  list(id = cs$id, formula = cs$formula, reml = isTRUE(cs$reml), family = fam,
       call = sprintf("glmmTMB(%s, data, REML = %s, family = %s, control = glmmTMBControl(optCtrl = list(rel.tol = 1e-10, eval.max = 1e4, iter.max = 1e4)))",
                      cs$formula, if (isTRUE(cs$reml)) "TRUE" else "FALSE", fam),
       criterion = -2 * as.numeric(logLik(m)), beta = vec(fixef(m)$cond), beta_names = I(names(fixef(m)$cond)),
       se = vec(sqrt(diag(vcov(m)$cond))),
       sigma = if (fam == "gaussian") sigma(m) else NULL, terms = terms,
       intervals = if (is.null(cs$intervals)) NULL else intervals(m, unlist(cs$intervals)),
       lmertest = if (is.null(cs$lmertest_formula)) NULL else lmertest_df(cs, data), converged = m$fit$convergence == 0, pdHess = isTRUE(m$sdr$pdHess),
       r_version = R.version.string, glmmTMB_version = as.character(packageVersion("glmmTMB")),
       TMB_version = as.character(packageVersion("TMB")))
}

run_cases(cases, run_case, args$out_dir, function(res, seconds) {
  sprintf("%-18s criterion %.10f  sigma %s  converged %s  (%.1f s)", res$id, res$criterion,
          if (is.null(res$sigma)) "-" else sprintf("%.6f", res$sigma), res$converged, seconds)
})
