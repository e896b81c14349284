# ucb: limits on the weights the ucb bandit proposes for a smart
# link's arms (data.config.ucb). The rules are shared with the other bandit
# in data.smartlinks.lib.bandit; only the limits differ.
package smartlinks.ucb

import data.smartlinks.lib.bandit

result := bandit.evaluate("ucb", data.config.ucb)

deny := result.deny

obligations := result.obligations
