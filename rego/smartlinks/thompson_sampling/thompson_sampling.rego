# thompson_sampling: limits on the weights the thompson_sampling bandit proposes for a smart
# link's arms (data.config.thompson_sampling). The rules are shared with the other bandit
# in data.smartlinks.lib.bandit; only the limits differ.
package smartlinks.thompson_sampling

import data.smartlinks.lib.bandit

result := bandit.evaluate("thompson_sampling", data.config.thompson_sampling)

deny := result.deny

obligations := result.obligations
