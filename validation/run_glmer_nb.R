#!/usr/bin/env Rscript
## Reference results for sparselmm.glmer_nb (negative binomial GLMM, theta estimated) from lme4's glmer.nb and
## glmmTMB's family = nbinom2, for the cases in validation/glmer_nb_cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_glmer_nb.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_glmer_nb), numbers at full precision
## (jsonlite digits = NA), with the R, lme4, glmmTMB and MASS versions and, for every number, the R call that
## produced it ("calls"). Non-zero exit if any case failed.
##
## lme4 cases hold three things:
##   default: glmer.nb(formula, data = d)                                  (lme4's defaults: tol = 5e-5)
##   tight:   lme4:::optTheta (glmer.nb's theta search) with tol = 1e-10 from a glmer fit at the default theta,
##            both with control = glmerControl(tolPwrss = 1e-12) (glmer.nb(..., tol = 1e-10) itself stops: it
##            passes tol= on to its Poisson glmer fit, "unused argument")
##            lme4's default tolPwrss leaves its log|L|^2 one PIRLS step behind (~1e-3 in -2 log L), and
##            optimize()'s tol = 5e-5 on log(theta) leaves theta ~1e-4 from the minimum; the tight fit is
##            the one compared at 1e-3 relative / 1e-4 absolute
##   minus2loglik_exact: lme4's tight-PIRLS deviance function at the default fit's estimates,
##            glmer(formula, family = negative.binomial(theta_default), control = glmerControl(tolPwrss = 1e-12),
##                  devFunOnly = TRUE)(c(getME(m, "theta"), fixef(m)))
##            what "criterion equal to or lower than lme4's" is checked against
## glmmTMB cases hold glmmTMB(formula, data = d, family = nbinom2) (theta = sigma(m)).
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4", "jsonlite")
args <- script_args(file.path("validation", "reference_glmer_nb"))
out_dir <- args$out_dir
cases <- select_cases(fromJSON(file.path("validation", "glmer_nb_cases.json"), simplifyVector = FALSE), args$rest)

## the formula R fits: the offset column as offset() in the formula (sparselmm gets it as offset=)
r_formula <- function(cs) {
  f <- cs$formula
  if (!is.null(cs$offset)) f <- paste0(f, " + offset(", cs$offset, ")")
  as.formula(f, env = globalenv())
}

## random-effect standard deviations and correlations in lme4's as.data.frame(VarCorr) order
lme4_sdcor <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, sdcor = vc$sdcor)
}

lme4_fit <- function(m) {
  list(nb_theta = getME(m, "glmer.nb.theta"), beta = unname(fixef(m)), beta_names = names(fixef(m)),
       theta = unname(getME(m, "theta")), se = unname(sqrt(diag(as.matrix(vcov(m))))),
       loglik = as.numeric(logLik(m)), df = attr(logLik(m), "df"), aic = AIC(m), bic = BIC(m),
       family = family(m)$family, varcorr = lme4_sdcor(m), nevals = attr(m, "nevals"))
}

failed <- 0
for (cs in cases) {
  res <- tryCatch({
    d <- read.csv(cs$data, stringsAsFactors = TRUE)
    for (f in unlist(cs$factors)) d[[f]] <- factor(d[[f]])
    form <- r_formula(cs)
    fstr <- paste(deparse(form), collapse = " ")
    warns <- character(0)
    catch <- function(expr) withCallingHandlers(expr, warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
    out <- list(id = cs$id, engine = cs$engine, r_version = R.version.string,
                lme4_version = as.character(packageVersion("lme4")),
                mass_version = as.character(packageVersion("MASS")))
    if (cs$engine == "lme4") {
      t0 <- proc.time()[["elapsed"]]
      m <- suppressMessages(catch(glmer.nb(form, data = d)))
      out$seconds <- proc.time()[["elapsed"]] - t0
      th <- getME(m, "glmer.nb.theta")
      ## glmer.nb(..., tol = ) fails in lme4 1.1-31 (its Poisson start fit is called with tol=, "unused
      ## argument"): the tight fit is glmer.nb's own second half, optTheta, on a tight fit at the default theta
      ctl <- glmerControl(tolPwrss = 1e-12)
      g1 <- suppressWarnings(glmer(form, data = d, family = MASS::negative.binomial(theta = th), control = ctl))
      mt <- suppressMessages(suppressWarnings(lme4:::optTheta(g1, interval = log(th) + c(-3, 3), tol = 1e-10,
                                                             control = ctl)))
      dfun <- suppressWarnings(glmer(form, data = d, family = MASS::negative.binomial(theta = th),
                                     control = glmerControl(tolPwrss = 1e-12), devFunOnly = TRUE))
      out$default <- lme4_fit(m)
      out$tight <- lme4_fit(mt)
      out$minus2loglik_exact <- dfun(unname(c(getME(m, "theta"), fixef(m))))
      out$warnings <- warns
      out$calls <- list(
        default = sprintf("glmer.nb(%s, data = d)", fstr),
        tight = sprintf(paste0("lme4:::optTheta(glmer(%s, data = d, family = MASS::negative.binomial(theta = %.10g), ",
                               "control = ctl), interval = log(%.10g) + c(-3, 3), tol = 1e-10, control = ctl), ",
                               "ctl = glmerControl(tolPwrss = 1e-12)"), fstr, th, th),
        minus2loglik_exact = sprintf(paste0("glmer(%s, data = d, family = MASS::negative.binomial(theta = %.10g), ",
                                            "control = glmerControl(tolPwrss = 1e-12), devFunOnly = TRUE)",
                                            "(c(getME(m, 'theta'), fixef(m))) at the default fit m"), fstr, th),
        nb_theta = "getME(m, 'glmer.nb.theta')", loglik = "logLik(m)", se = "sqrt(diag(vcov(m)))",
        varcorr = "as.data.frame(VarCorr(m))$sdcor")
    } else if (cs$engine == "glmmTMB") {
      attach_quietly("glmmTMB")
      out$glmmTMB_version <- as.character(packageVersion("glmmTMB"))
      t0 <- proc.time()[["elapsed"]]
      m <- catch(glmmTMB(form, data = d, family = nbinom2))
      out$seconds <- proc.time()[["elapsed"]] - t0
      vc <- VarCorr(m)$cond
      sds <- lapply(names(vc), function(g) {
        s <- attr(vc[[g]], "stddev")
        cr <- attr(vc[[g]], "correlation")
        list(grp = g, names = names(s), sd = unname(s), cor = if (length(s) > 1) cr[lower.tri(cr)] else list())
      })
      fe <- fixef(m)$cond
      out$fit <- list(nb_theta = sigma(m), beta = unname(fe), beta_names = names(fe),
                      se = unname(sqrt(diag(vcov(m)$cond))), loglik = as.numeric(logLik(m)),
                      df = attr(logLik(m), "df"), aic = AIC(m), sd = sds,
                      converged = m$fit$convergence == 0, pdHess = m$sdr$pdHess)
      out$warnings <- warns
      out$calls <- list(fit = sprintf("glmmTMB(%s, data = d, family = nbinom2)", fstr),
                        nb_theta = "sigma(m)", loglik = "logLik(m)", beta = "fixef(m)$cond",
                        se = "sqrt(diag(vcov(m)$cond))", sd = "attr(VarCorr(m)$cond[[g]], 'stddev')")
    } else stop("unknown engine ", cs$engine)
    out
  }, error = function(e) {
    message("case ", cs$id, " failed: ", conditionMessage(e))
    NULL
  })
  if (is.null(res)) {
    failed <- failed + 1
    next
  }
  write_json(res, file.path(out_dir, paste0(cs$id, ".json")), digits = NA, auto_unbox = TRUE, null = "null")
  ll <- if (cs$engine == "lme4") res$default$loglik else res$fit$loglik
  th <- if (cs$engine == "lme4") res$default$nb_theta else res$fit$nb_theta
  cat(sprintf("%-16s %-8s logLik %.6f  theta %.6f  %.2fs\n", cs$id, cs$engine, ll, th, res$seconds))
}
if (failed > 0) quit(status = 1)
